/*
 * _dl_find_object for static musl binaries (deploy/release).
 *
 * Rust's standard library unwinds panics with the _Unwind_* functions of
 * "libunwind". Rust's own musl targets ship LLVM's; the standard library
 * built here from Debian's sources (-Zbuild-std) does not, so the release
 * links GCC's libgcc_eh, which has the same interface. GCC 12's copy finds
 * a program's unwind tables with glibc 2.35's _dl_find_object, which musl
 * does not have. This is that function for a static program, on top of
 * musl's dl_iterate_phdr: the object whose PT_LOAD segments hold the
 * address, and its PT_GNU_EH_FRAME. The structure is glibc's on x86-64
 * and aarch64 (no dlfo_eh_dbase, no dlfo_eh_count there).
 *
 * libgcc_eh also calls pthread functions through weak references (its
 * "gthreads" layer), which a static link leaves at address 0 unless
 * something else pulls them out of libc.a: without the table below, the
 * first panic jumps to address 0 in uw_init_context_1.
 */
#include <link.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Strong references, so that the static link keeps what libgcc_eh calls. */
void *const portrange_gthreads[] = {
    (void *)pthread_once,
    (void *)pthread_mutex_lock,
    (void *)pthread_mutex_unlock,
    (void *)pthread_key_create,
    (void *)pthread_getspecific,
    (void *)pthread_setspecific,
    (void *)pthread_cond_wait,
    (void *)pthread_cond_broadcast,
};

struct dl_find_object {
    unsigned long long dlfo_flags;
    void *dlfo_map_start;
    void *dlfo_map_end;
    void *dlfo_link_map;
    void *dlfo_eh_frame;
    unsigned long long dlfo_reserved[7];
};

struct search {
    uintptr_t pc;
    struct dl_find_object *out;
    int found;
};

static int visit(struct dl_phdr_info *info, size_t size, void *data)
{
    struct search *s = data;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    void *eh_frame = NULL;
    int holds = 0;
    (void)size;
    for (size_t i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + p->p_vaddr;
        if (p->p_type == PT_LOAD) {
            uintptr_t end = start + p->p_memsz;
            if (start < lo)
                lo = start;
            if (end > hi)
                hi = end;
            if (s->pc >= start && s->pc < end)
                holds = 1;
        } else if (p->p_type == PT_GNU_EH_FRAME) {
            eh_frame = (void *)start;
        }
    }
    if (!holds)
        return 0;
    s->out->dlfo_flags = 0;
    s->out->dlfo_map_start = (void *)lo;
    s->out->dlfo_map_end = (void *)hi;
    s->out->dlfo_link_map = NULL;
    s->out->dlfo_eh_frame = eh_frame;
    s->found = 1;
    return 1;
}

int _dl_find_object(void *pc, struct dl_find_object *out)
{
    struct search s = { (uintptr_t)pc, out, 0 };
    dl_iterate_phdr(visit, &s);
    return s.found ? 0 : -1;
}
