/*
 * textrel_obj: NOT a plugin. An object file to link into a plugin to give it text
 * relocations. Compiled WITHOUT -fPIC and with -mcmodel=large, the address of the global is
 * an absolute 64-bit constant in .text (R_X86_64_64), so a shared object linked from it carries
 * DT_TEXTREL: the loader must write into its code pages at load time.
 *   cc -c -O2 -fno-pic -mcmodel=large -o textrel_obj.o textrel_obj.c
 */
int sg_textrel_target = 7;

int *sg_textrel_address(void) { return &sg_textrel_target; }
