/*
 * systick.c -- the Cortex-M SysTick as bf_platform.h's 32-bit up-counter.
 *
 * SysTick is a 24-bit down-counter on the core clock.  It runs with the full reload 2^24 - 1
 * and its interrupt counts wraps, so the count is (wraps << 24) | (2^24 - 1 - current): an
 * up-counter that wraps modulo 2^32 exactly, however long a layer runs.
 *
 * bf_timer_begin() re-zeroes it (writing CVR clears it, the next tick reloads it) and clears
 * the wrap count.  Under QEMU -icount every instruction advances virtual time by 2^N ns, so
 * from that fixed phase the ticks of an invocation depend only on the instructions it executes
 * and repeat exactly from run to run (TOOLCHAIN.md).
 */
#include "bf_port.h"

#define BF_SYST_CSR 0xE000E010u
#define BF_SYST_RVR 0xE000E014u
#define BF_SYST_CVR 0xE000E018u
#define BF_SCB_ICSR 0xE000ED04u
#define BF_CSR_ENABLE 0x1u
#define BF_CSR_TICKINT 0x2u
#define BF_CSR_CLKSOURCE 0x4u /* the processor clock */
#define BF_ICSR_PENDSTSET (1u << 26)
#define BF_ICSR_PENDSTCLR (1u << 25)
#define BF_SYST_MAX 0xFFFFFFu

static volatile uint32_t g_wraps;

void bf_port_systick_handler(void) {
    g_wraps = g_wraps + 1u;
}

void bf_port_timer_init(void) {
    BF_REG(BF_SYST_CSR) = 0;
    BF_REG(BF_SYST_RVR) = BF_SYST_MAX;
    BF_REG(BF_SYST_CVR) = 0;
    g_wraps = 0;
    BF_REG(BF_SYST_CSR) = BF_CSR_CLKSOURCE | BF_CSR_TICKINT | BF_CSR_ENABLE;
}

uint32_t bf_timer_read(void) {
    uint32_t hi;
    uint32_t value;
    uint32_t pending;
    do {
        hi = g_wraps;
        value = BF_REG(BF_SYST_CVR);
        pending = BF_REG(BF_SCB_ICSR) & BF_ICSR_PENDSTSET;
    } while (hi != g_wraps);
    if (pending) {
        /* Wrapped, but the interrupt has not run yet: `value` may be from either side of the
         * wrap, a fresh read is after it. */
        value = BF_REG(BF_SYST_CVR);
        hi += 1u;
    }
    return (hi << 24) | (BF_SYST_MAX - value);
}

void bf_timer_begin(void) {
    BF_REG(BF_SYST_CSR) = BF_CSR_CLKSOURCE | BF_CSR_ENABLE;
    BF_REG(BF_SYST_CVR) = 0;
    while (BF_REG(BF_SYST_CVR) == 0) {
    }
    BF_REG(BF_SCB_ICSR) = BF_ICSR_PENDSTCLR;
    g_wraps = 0;
    BF_REG(BF_SYST_CSR) = BF_CSR_CLKSOURCE | BF_CSR_TICKINT | BF_CSR_ENABLE;
}
