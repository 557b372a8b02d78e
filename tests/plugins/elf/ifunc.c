/*
 * ifunc: the good plugin plus two IFUNCs, whose resolvers are plugin code that the dynamic
 * loader runs inside dlopen:
 *   sg_exported_probe  an exported IFUNC: a STT_GNU_IFUNC dynamic symbol
 *   local_probe        a static IFUNC: no dynamic symbol, an R_X86_64_IRELATIVE relocation
 * Exports: as good.c, plus sg_exported_probe.
 */
#include "../good.c"

static int probe_impl(void) { return 42; }

typedef int (*probe_fn)(void);

static probe_fn resolve_probe(void) { return probe_impl; }

EXPORT int sg_exported_probe(void) __attribute__((ifunc("resolve_probe")));

static int local_probe(void) __attribute__((ifunc("resolve_probe")));

/* Keeps local_probe referenced so its IRELATIVE relocation is emitted. */
EXPORT int sg_call_local_probe(void) { return local_probe(); }
