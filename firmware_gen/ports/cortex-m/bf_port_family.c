/*
 * bf_port_family.c -- Cortex-M (Armv6-M, Armv7-M, Armv8-M) start-up for boardfit firmware.
 *
 * Vector table: the 16 core exceptions plus BF_NUM_IRQS device interrupts, none of which is
 * enabled (an unexpected one is reported like a fault).  The reset handler copies .data and the
 * model's non-zero state from flash, zeroes .bss and the zero-initialised state (the arena and
 * the debug copies are not initialised: the model writes them before reading), enables the
 * FPU where the build uses it and calls main().
 *
 * Faults (HardFault, NMI, MemManage, BusFault, UsageFault, SecureFault) are reported over the
 * UART with the stacked pc / lr / xPSR and, on Armv7-M and Armv8-M Mainline, the fault status
 * registers (CFSR, HFSR, MMFAR, BFAR); see bf_port_fault().  The core boots on the main stack
 * and never switches to the process stack, so the frame is found through MSP.
 */
#include "bf_port.h"

/* Device interrupt vectors in the table (none is enabled; 32 covers the M0/M0+ maximum and
 * the low IRQs of larger parts, where a stray one would land). */
#define BF_NUM_IRQS 32

#define BF_SCB_ICSR 0xE000ED04u
#define BF_SCB_VTOR 0xE000ED08u
#define BF_SCB_AIRCR 0xE000ED0Cu
#define BF_SCB_CPACR 0xE000ED88u
#define BF_SCB_CFSR 0xE000ED28u
#define BF_SCB_HFSR 0xE000ED2Cu
#define BF_SCB_MMFAR 0xE000ED34u
#define BF_SCB_BFAR 0xE000ED38u

#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__) || \
    defined(__ARM_ARCH_8_1M_MAIN__)
#define BF_HAS_FAULT_STATUS 1
#else
#define BF_HAS_FAULT_STATUS 0
#endif

extern uint32_t _sidata, _sdata, _edata;
extern uint32_t _sistate, _sstate, _estate;
extern uint32_t _szstate, _ezstate;
extern uint32_t _sbss, _ebss;
extern uint32_t _estack;
extern uint32_t _sram, _eram;

int main(void);
void bf_reset_handler(void);
void bf_fault_entry(void);
void bf_port_cortexm_fault(const uint32_t *frame, uint32_t exc_return);
void bf_port_systick_handler(void); /* timer/systick.c, or the weak default below */

void bf_reset_handler(void) {
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
#if defined(__ARM_FP)
    /* CP10/CP11 full access before the first floating-point instruction. */
    BF_REG(BF_SCB_CPACR) |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    (void)main();
    for (;;) {
    }
}

/* Passes the main stack pointer (the exception frame) and EXC_RETURN to the C reporter.  Naked:
 * no prologue may move the stack pointer before it is read. */
__attribute__((naked)) void bf_fault_entry(void) {
    __asm__ volatile(
        "mrs r0, msp\n"
        "mov r1, lr\n"
        "ldr r2, =bf_port_cortexm_fault\n"
        "bx r2\n"
        ".ltorg\n");
}

static const char *bf_exception_name(uint32_t n) {
    switch (n) {
    case 2:
        return "NMI";
    case 3:
        return "HardFault";
    case 4:
        return "MemManage";
    case 5:
        return "BusFault";
    case 6:
        return "UsageFault";
    case 7:
        return "SecureFault";
    default:
        return n >= 16 ? "UnexpectedInterrupt" : "UnexpectedException";
    }
}

void bf_port_cortexm_fault(const uint32_t *frame, uint32_t exc_return) {
    static const char *const names[] = {"exception", "pc", "lr", "xpsr", "sp", "exc_return",
                                        "cfsr", "hfsr", "mmfar", "bfar"};
    uint32_t values[10];
    uint32_t ipsr;
    size_t n = 6;
    uintptr_t f = (uintptr_t)frame;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    ipsr &= 0x1FFu;
    values[0] = ipsr;
    values[1] = values[2] = values[3] = 0xFFFFFFFFu; /* unknown if the stack pointer is bad */
    if ((f & 3u) == 0 && f >= (uintptr_t)&_sram && f + 32u <= (uintptr_t)&_eram) {
        values[1] = frame[6];
        values[2] = frame[5];
        values[3] = frame[7];
    }
    values[4] = (uint32_t)f;
    values[5] = exc_return;
#if BF_HAS_FAULT_STATUS
    values[6] = BF_REG(BF_SCB_CFSR);
    values[7] = BF_REG(BF_SCB_HFSR);
    values[8] = BF_REG(BF_SCB_MMFAR);
    values[9] = BF_REG(BF_SCB_BFAR);
    n = 10;
#endif
    bf_port_fault(bf_exception_name(ipsr), names, values, n);
}

/* Without a SysTick counter (nRF51) nothing enables its interrupt; keep the vector defined. */
__attribute__((weak)) void bf_port_systick_handler(void) {
    bf_fault_entry();
}

void bf_port_enable_interrupts(void) {
    __asm__ volatile("cpsie i" ::: "memory");
}

void bf_port_restart(void) {
    /* AIRCR: VECTKEY | SYSRESETREQ.  The system reset reloads the image's RAM contents (the
     * reset handler re-initialises .data and .bss anyway). */
    __asm__ volatile("dsb" ::: "memory");
    BF_REG(BF_SCB_AIRCR) = 0x05FA0004u;
    __asm__ volatile("dsb" ::: "memory");
    for (;;) {
    }
}

uint32_t bf_port_semihost(uint32_t op, const void *arg) {
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

typedef void (*bf_vector)(void);

__attribute__((section(".isr_vector"), used)) static const bf_vector bf_vectors[16 + BF_NUM_IRQS] = {
    [0] = (bf_vector)(uintptr_t)&_estack,
    [1] = bf_reset_handler,
    [2] = bf_fault_entry,  /* NMI */
    [3] = bf_fault_entry,  /* HardFault */
    [4] = bf_fault_entry,  /* MemManage */
    [5] = bf_fault_entry,  /* BusFault */
    [6] = bf_fault_entry,  /* UsageFault */
    [7] = bf_fault_entry,  /* SecureFault (Armv8-M) */
    [11] = bf_fault_entry, /* SVCall: never used */
    [12] = bf_fault_entry, /* DebugMonitor */
    [14] = bf_fault_entry, /* PendSV: never used */
    [15] = bf_port_systick_handler,
#define BF_IRQ4 bf_fault_entry, bf_fault_entry, bf_fault_entry, bf_fault_entry
    BF_IRQ4, BF_IRQ4, BF_IRQ4, BF_IRQ4, BF_IRQ4, BF_IRQ4, BF_IRQ4, BF_IRQ4, /* 16..47 */
#undef BF_IRQ4
};
