// cpp-stats: a skill plugin in C++, shaped like the one in VT Code's NATIVE_PLUGIN_GUIDE.md:
// `extern "C"` exports, the metadata as a raw string literal, and the result kept in a
// thread-local std::string whose c_str() is returned (so there is nothing for the host to
// free, and the plugin exports no vtcode_plugin_free_string). skillgate calls a plugin one
// call at a time, so the buffer is never overwritten while the host still reads it.
//
// Build it with the hardening flags skillgate's default policy requires (the Makefile beside
// this file has the same line):
//
//   g++ -std=c++17 -shared -fPIC -O2 -Wall -Wextra -Werror -Wl,-z,relro,-z,now
//       -Wl,-z,noexecstack -o libcpp-stats.so stats.cpp
//
// It links libstdc++.so.6, libm.so.6, libgcc_s.so.1 and libc.so.6, all in the default
// DT_NEEDED list. Built with a plain `g++ -shared -fPIC`, Debian's toolchain gives it only
// partial RELRO, and `skill-sign sign` refuses it, printing the flags to add.
//
// What it does: walks the context JSON's "input" and counts its values by kind, with the
// deepest nesting. It parses with a small recursive-descent reader that throws on anything
// it does not accept (nesting deeper than 32, among others); the exception is caught before
// it reaches the C boundary and becomes {"success": false, "error": ...}. So a call exercises
// libstdc++'s containers, strings and exception unwinding inside skillgate's sandbox.

#include <cstdint>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>

namespace {

constexpr unsigned kMaxDepth = 32;

// Counts of each kind of JSON value, and the deepest nesting seen.
struct Stats {
    std::map<std::string, unsigned long> kinds;
    unsigned depth = 0;
};

class Reader {
  public:
    explicit Reader(const char *text) : p_(text) {}

    // Reads one value, counting it (and everything inside it) into `stats` if given.
    void value(Stats *stats, unsigned depth) {
        if (depth > kMaxDepth) {
            throw std::length_error("input nests deeper than " + std::to_string(kMaxDepth));
        }
        if (stats != nullptr && depth > stats->depth) {
            stats->depth = depth;
        }
        skip_space();
        switch (*p_) {
        case '{':
            count(stats, "object");
            object(stats, depth);
            break;
        case '[':
            count(stats, "array");
            array(stats, depth);
            break;
        case '"':
            count(stats, "string");
            string();
            break;
        case 't':
            count(stats, "bool");
            literal("true");
            break;
        case 'f':
            count(stats, "bool");
            literal("false");
            break;
        case 'n':
            count(stats, "null");
            literal("null");
            break;
        default:
            count(stats, "number");
            number();
        }
    }

    // Finds the member `key` of the top-level object and reads its value into `stats`;
    // every other member is read and checked, not counted. Returns whether it was there.
    bool member(const std::string &key, Stats *stats) {
        skip_space();
        expect('{');
        bool found = false;
        skip_space();
        if (*p_ == '}') {
            ++p_;
            return false;
        }
        for (;;) {
            skip_space();
            const std::string name = string();
            skip_space();
            expect(':');
            if (name == key) {
                found = true;
                value(stats, 1);
            } else {
                value(nullptr, 1);
            }
            skip_space();
            if (*p_ == ',') {
                ++p_;
                continue;
            }
            expect('}');
            return found;
        }
    }

  private:
    static void count(Stats *stats, const char *kind) {
        if (stats != nullptr) {
            ++stats->kinds[kind];
        }
    }

    void skip_space() {
        while (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r') {
            ++p_;
        }
    }

    void expect(char c) {
        if (*p_ != c) {
            throw std::invalid_argument(std::string("expected '") + c + "'");
        }
        ++p_;
    }

    void literal(const char *word) {
        const std::size_t len = std::strlen(word);
        if (std::strncmp(p_, word, len) != 0) {
            throw std::invalid_argument(std::string("expected ") + word);
        }
        p_ += len;
    }

    // Reads a string; escapes are kept as written (only the key names are compared).
    std::string string() {
        expect('"');
        std::string out;
        while (*p_ != '"') {
            if (*p_ == '\0') {
                throw std::invalid_argument("unterminated string");
            }
            if (*p_ == '\\' && p_[1] != '\0') {
                out += *p_++;
            }
            out += *p_++;
        }
        ++p_;
        return out;
    }

    void number() {
        const char *start = p_;
        while (std::strchr("+-.0123456789eE", *p_) != nullptr && *p_ != '\0') {
            ++p_;
        }
        if (p_ == start) {
            throw std::invalid_argument("unexpected character");
        }
    }

    void object(Stats *stats, unsigned depth) {
        expect('{');
        skip_space();
        if (*p_ == '}') {
            ++p_;
            return;
        }
        for (;;) {
            skip_space();
            string();
            skip_space();
            expect(':');
            value(stats, depth + 1);
            skip_space();
            if (*p_ == ',') {
                ++p_;
                continue;
            }
            expect('}');
            return;
        }
    }

    void array(Stats *stats, unsigned depth) {
        expect('[');
        skip_space();
        if (*p_ == ']') {
            ++p_;
            return;
        }
        for (;;) {
            value(stats, depth + 1);
            skip_space();
            if (*p_ == ',') {
                ++p_;
                continue;
            }
            expect(']');
            return;
        }
    }

    const char *p_;
};

// A JSON string literal holding `text` (the messages here are ASCII without quotes, but
// escape them anyway).
std::string quoted(const std::string &text) {
    std::string out = "\"";
    for (const char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
        }
        out += (static_cast<unsigned char>(c) < 0x20) ? '?' : c;
    }
    return out + "\"";
}

std::string run(const char *context_json) {
    if (context_json == nullptr) {
        throw std::invalid_argument("no context");
    }
    Stats stats;
    Reader reader(context_json);
    if (!reader.member("input", &stats)) {
        throw std::invalid_argument("the context has no \"input\"");
    }
    std::string kinds = "{";
    for (const auto &[kind, n] : stats.kinds) {
        if (kinds.size() > 1) {
            kinds += ",";
        }
        kinds += quoted(kind) + ":" + std::to_string(n);
    }
    kinds += "}";
    return R"({"success":true,"output":{"kinds":)" + kinds +
           R"(,"depth":)" + std::to_string(stats.depth) +
           R"(,"lang":"c++"},"error":null,"files":[]})";
}

} // namespace

extern "C" {

uint32_t vtcode_plugin_version(void) {
    return 1; // ABI version
}

const char *vtcode_plugin_metadata(void) {
    return R"({
        "name": "cpp-stats",
        "description": "Counts the values in its input by kind, in C++",
        "version": "0.1.0",
        "author": "skillgate examples",
        "abi_version": 1
    })";
}

const char *vtcode_plugin_execute(const char *input_json) {
    static thread_local std::string result;
    try {
        result = run(input_json);
    } catch (const std::exception &e) {
        // No exception may cross into the host: it has no C++ frames to unwind into.
        try {
            result = R"({"success":false,"output":{},"error":)" + quoted(e.what()) +
                     R"(,"files":[]})";
        } catch (...) {
            return nullptr; // out of memory: a faulted call
        }
    }
    return result.c_str();
}

} // extern "C"
