/*
 * riscv_mcycle.c -- the RISC-V mcycle CSR (low 32 bits) as bf_platform.h's up-counter.
 *
 * On silicon mcycle counts core clock cycles.  QEMU 7.2 with -icount returns virtual time in
 * nanoseconds instead; with shift 0 (1 ns per instruction) that is the instruction count, the
 * same in every run without re-zeroing, so bf_timer_begin() has nothing to do.
 */
#include "bf_port.h"

void bf_port_timer_init(void) {
}

uint32_t bf_timer_read(void) {
    uint32_t value;
    __asm__ volatile("csrr %0, mcycle" : "=r"(value));
    return value;
}

void bf_timer_begin(void) {
}
