/*
 * bf_popcount.h — population count for the binary kernels (private to the kernel library).
 *
 * bf_popcount32_portable is a branch-free SWAR count that every C99 compiler handles.  When the
 * library is built with -DBF_USE_BUILTIN_POPCOUNT on GCC or Clang, bf_popcount32 uses
 * __builtin_popcount instead (one instruction where the ISA has one, e.g. x86 with -mpopcnt,
 * AArch64 via CNT; a libgcc call elsewhere).  Both return the number of set bits, so the
 * kernels give the same results either way; the binary kernel tests check both builds.
 */
#ifndef BF_POPCOUNT_H
#define BF_POPCOUNT_H

#include <stdint.h>

static inline int32_t bf_popcount32_portable(uint32_t x) {
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    x = (x + (x >> 4)) & 0x0F0F0F0Fu;
    return (int32_t)((x * 0x01010101u) >> 24);
}

#if defined(BF_USE_BUILTIN_POPCOUNT) && (defined(__GNUC__) || defined(__clang__))
static inline int32_t bf_popcount32(uint32_t x) {
    return (int32_t)__builtin_popcount(x);
}
#else
static inline int32_t bf_popcount32(uint32_t x) {
    return bf_popcount32_portable(x);
}
#endif

#endif /* BF_POPCOUNT_H */
