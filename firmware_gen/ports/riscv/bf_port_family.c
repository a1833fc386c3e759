/*
 * bf_port_family.c -- RISC-V (RV32, machine mode, no interrupts) start-up for boardfit firmware.
 *
 * _start (placed first in flash, where the boot ROM jumps) sets the global pointer and the
 * stack, points mtvec at the trap entry, copies .data and the model's non-zero state from flash,
 * zeroes .bss and the zero-initialised state and calls main().  Any trap (illegal instruction,
 * misaligned or faulting access, ecall) is reported over the UART with mcause, mepc and mtval
 * (see bf_port_fault()).  No interrupt is ever enabled: the counter (mcycle) needs none.
 */
#include "bf_port.h"

extern uint32_t _sidata, _sdata, _edata;
extern uint32_t _sistate, _sstate, _estate;
extern uint32_t _szstate, _ezstate;
extern uint32_t _sbss, _ebss;

int main(void);
void bf_port_riscv_init(void);
void bf_port_riscv_trap(void);

__asm__(
    ".section .text.bf_entry, \"ax\"\n"
    ".globl _start\n"
    "_start:\n"
    "  csrw mie, zero\n"
    "  .option push\n"
    "  .option norelax\n"
    "  la gp, __global_pointer$\n"
    "  .option pop\n"
    "  la sp, _estack\n"
    "  la t0, bf_trap_entry\n"
    "  csrw mtvec, t0\n"
    "  call bf_port_riscv_init\n"
    "1: j 1b\n"
    "  .balign 4\n"
    "bf_trap_entry:\n"
    "  la sp, _estack\n" /* the trap may come from a broken stack: report on a fresh one */
    "  call bf_port_riscv_trap\n"
    "2: j 2b\n"
    ".text\n");

void bf_port_riscv_init(void) {
    uint32_t *src;
    uint32_t *dst;
    for (src = &_sidata, dst = &_sdata; dst < &_edata;) {
        *dst++ = *src++;
    }
    for (src = &_sistate, dst = &_sstate; dst < &_estate;) {
        *dst++ = *src++;
    }
    for (dst = &_szstate; dst < &_ezstate;) {
        *dst++ = 0;
    }
    for (dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0;
    }
    (void)main();
}

static const char *bf_trap_name(uint32_t mcause) {
    static const char *const names[] = {
        "InstructionMisaligned", "InstructionAccessFault", "IllegalInstruction", "Breakpoint",
        "LoadMisaligned", "LoadAccessFault", "StoreMisaligned", "StoreAccessFault",
        "EcallFromU", "EcallFromS", "Reserved", "EcallFromM",
    };
    if (mcause & 0x80000000u) {
        return "UnexpectedInterrupt";
    }
    return mcause < sizeof names / sizeof names[0] ? names[mcause] : "UnknownTrap";
}

void bf_port_riscv_trap(void) {
    static const char *const names[] = {"mcause", "mepc", "mtval"};
    uint32_t values[3];
    __asm__ volatile("csrr %0, mcause" : "=r"(values[0]));
    __asm__ volatile("csrr %0, mepc" : "=r"(values[1]));
    __asm__ volatile("csrr %0, mtval" : "=r"(values[2]));
    bf_port_fault(bf_trap_name(values[0]), names, values, 3);
}

void bf_port_enable_interrupts(void) {
    /* Nothing uses interrupts on RISC-V boards. */
}

void bf_port_restart(void) {
    /* No portable reset register: start over from the entry, which re-initialises RAM. */
    __asm__ volatile("j _start");
    for (;;) {
    }
}

uint32_t bf_port_semihost(uint32_t op, const void *arg) {
    /* The RISC-V semihosting sequence: slli / ebreak / srai, uncompressed, in one page. */
    register uint32_t a0 __asm__("a0") = op;
    register const void *a1 __asm__("a1") = arg;
    __asm__ volatile(".option push\n.option norvc\n"
                     ".balign 16\n"
                     "slli x0, x0, 0x1f\n ebreak\n srai x0, x0, 7\n"
                     ".option pop\n"
                     : "+r"(a0)
                     : "r"(a1)
                     : "memory");
    return a0;
}
