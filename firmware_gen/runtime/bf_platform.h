/*
 * bf_platform.h -- what a board port provides to the serial runtime.
 *
 * One implementation per board family (Cortex-M bare metal, Linux, RISC-V, the POSIX host in
 * platform_posix.c).  The runtime calls nothing else of the board: no libc I/O, no malloc.
 *
 * A port's main() is, in full:    int main(void) { return bf_runtime_run(); }
 * (bf_runtime_run() calls bf_platform_init() itself; on a board it never returns).
 */
#ifndef BF_PLATFORM_H
#define BF_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What bf_timer_read() counts. */
#define BF_COUNTER_NONE 0         /* no counter: bf_timer_read() returns 0 */
#define BF_COUNTER_CYCLES 1       /* core clock cycles (DWT->CYCCNT, mcycle, SysTick at core clock) */
#define BF_COUNTER_INSTRUCTIONS 2 /* retired instructions (QEMU -icount: SysTick counts them) */
#define BF_COUNTER_NANOSECONDS 3  /* wall-clock nanoseconds (hosted: CLOCK_MONOTONIC) */

/* bf_uart_getc() results besides a byte 0..255. */
#define BF_UART_TIMEOUT (-1) /* no byte arrived within the timeout */
#define BF_UART_CLOSED (-2)  /* hosted only: the link is gone for good; bf_runtime_run() returns */

/* Clocks, UART and counter up; called once by bf_runtime_run() before anything else.  The
 * device must not transmit anything here (the host may not be listening yet). */
void bf_platform_init(void);

/* Blocks until a byte arrives (returns 0..255) or timeout_ms milliseconds pass (returns
 * BF_UART_TIMEOUT).  timeout_ms is a hint for idle detection; a port without a time base may
 * wait longer but must eventually return.  Receive overruns lose bytes; the protocol copes. */
int bf_uart_getc(uint32_t timeout_ms);

/* Blocks until all n bytes are handed to the transmitter. */
void bf_uart_write(const uint8_t *data, size_t n);

/* Free-running up-counter, wrapping modulo 2^32; the runtime only takes differences of two
 * reads less than 2^32 ticks apart.  A 24-bit down-counter such as SysTick must be extended
 * (e.g. by its wrap interrupt) and inverted by the port. */
uint32_t bf_timer_read(void);

/* Called right before a measured region (an invocation).  Ports whose counts are only
 * reproducible from a fixed phase (SysTick under QEMU -icount: write CVR=0, wait for the
 * reload) re-zero the counter here; others may do nothing. */
void bf_timer_begin(void);

/* Ticks per second of bf_timer_read() (for instructions: instructions per second of virtual
 * time); 0 when unknown. */
uint32_t bf_timer_hz(void);

/* One of BF_COUNTER_*. */
uint8_t bf_timer_kind(void);

/* Soft reboot: waits until the UART has sent every byte handed to bf_uart_write(), then
 * restarts the program from its reset vector with fresh RAM.  Does not return on a board;
 * a test platform may return, and the runtime then reinitialises its own state. */
void bf_platform_reset(void);

#ifdef __cplusplus
}
#endif

#endif /* BF_PLATFORM_H */
