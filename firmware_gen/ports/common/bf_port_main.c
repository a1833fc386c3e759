/*
 * bf_port_main.c -- bf_platform.h for bare-metal boards, on top of a UART driver, a counter and
 * the family's start-up code (see bf_port.h).  Also main() and the fault report.
 */
#include "bf_port.h"
#include "bf_runtime.h"

/* Milliseconds -> counter ticks for bf_uart_getc()'s timeout, capped at 2^31 ticks (no 64-bit
 * division: it would pull a libgcc helper into every image). */
static uint32_t bf_port_ticks(uint32_t ms) {
    const uint32_t per_ms = BF_TIMER_HZ / 1000u > 0u ? BF_TIMER_HZ / 1000u : 1u;
    return ms > 0x7FFFFFFFu / per_ms ? 0x7FFFFFFFu : ms * per_ms;
}

void bf_platform_init(void) {
    bf_port_uart_init();
    bf_port_timer_init();
    bf_port_enable_interrupts();
}

int bf_uart_getc(uint32_t timeout_ms) {
    uint32_t start = bf_timer_read();
    uint32_t limit = bf_port_ticks(timeout_ms);
    for (;;) {
        int c = bf_port_uart_poll();
        if (c >= 0) {
            return c;
        }
        if (bf_timer_read() - start >= limit) {
            return BF_UART_TIMEOUT;
        }
    }
}

void bf_uart_write(const uint8_t *data, size_t n) {
    bf_port_uart_send(data, n);
}

uint32_t bf_timer_hz(void) {
    return BF_TIMER_HZ;
}

uint8_t bf_timer_kind(void) {
    return (uint8_t)BF_COUNTER_KIND;
}

void bf_platform_reset(void) {
    bf_port_uart_flush();
    bf_port_restart();
}

int main(void) {
    return bf_runtime_run();
}

/* ---- fault report ---------------------------------------------------------------------- */

static void bf_port_puts(const char *s) {
    size_t n = 0;
    while (s[n] != '\0') {
        ++n;
    }
    bf_port_uart_send((const uint8_t *)s, n);
}

static void bf_port_put_hex(uint32_t v) {
    static const char digits[] = "0123456789abcdef";
    uint8_t text[10];
    int k;
    text[0] = '0';
    text[1] = 'x';
    for (k = 0; k < 8; ++k) {
        text[2 + k] = (uint8_t)digits[(v >> (28 - 4 * k)) & 0xFu];
    }
    bf_port_uart_send(text, sizeof text);
}

static void bf_port_report(const char *what, const char *const *names, const uint32_t *values, size_t n) {
    static const uint8_t delimiter = 0;
    size_t k;
    bf_port_uart_send(&delimiter, 1);
    bf_port_puts("BOARDFIT-FAULT ");
    bf_port_puts(what);
    for (k = 0; k < n; ++k) {
        bf_port_puts(" ");
        bf_port_puts(names[k]);
        bf_port_puts("=");
        bf_port_put_hex(values[k]);
    }
    bf_port_puts("\n");
    bf_port_uart_send(&delimiter, 1);
    bf_port_uart_flush();
}

void bf_port_fault(const char *what, const char *const *names, const uint32_t *values, size_t n) {
    bf_port_report(what, names, values, n);
#if BF_SEMIHOSTING
    bf_port_exit(BF_FAULT_EXIT_CODE);
#endif
    for (;;) {
        /* The runtime is gone: answer every frame the host (re)sends with the report. */
        if (bf_port_uart_poll() == 0) {
            bf_port_report(what, names, values, n);
        }
    }
}
