/*
 * bf_x86_target.h — the x86 code path of a generated project (private to the x86 variant).
 *
 * In the repository this file is empty: the x86 kernels then use whatever -m flags they are
 * compiled with (the test harness and benchmarks pass the flags targets/isa.py chooses from the
 * CPU's features).  The project generator replaces it with a GCC target pragma naming the same
 * instruction sets (e.g. "popcnt,avx2,avx512f,avx512bw,avx512vl,avx512vpopcntdq"), so that a
 * generated project builds the chosen path with any command line (Makefile, CMake, boardfit).
 */
#ifndef BF_X86_TARGET_H
#define BF_X86_TARGET_H
#endif /* BF_X86_TARGET_H */
