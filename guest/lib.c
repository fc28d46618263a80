/* Freestanding helpers: memory/string functions, paravirtual calls, console and printk. */
#include "guest.h"

void *memset(void *d, int c, u64 n)
{
    u8 *p = d;
    u64 v = (u8)c;
    v |= v << 8;
    v |= v << 16;
    v |= v << 32;
    while (n && ((u64)p & 7)) {
        *p++ = (u8)c;
        n--;
    }
    u64 *q = (u64 *)p;
    for (; n >= 8; n -= 8)
        *(volatile u64 *)q++ = v; /* volatile: keep clang from turning this into memset() */
    p = (u8 *)q;
    while (n--)
        *p++ = (u8)c;
    return d;
}

void *memcpy(void *d, const void *s, u64 n)
{
    u8 *dp = d;
    const u8 *sp = s;
    if ((((u64)dp | (u64)sp) & 7) == 0) {
        for (; n >= 8; n -= 8, dp += 8, sp += 8)
            *(volatile u64 *)dp = *(const u64 *)sp;
    }
    while (n--)
        *(volatile u8 *)dp++ = *sp++;
    return d;
}

/* Fill n u16 entries (owner arrays); 64-bit stores when aligned. */
void memset16(u16 *p, u16 v, u64 n)
{
    while (n && ((u64)p & 7)) {
        *p++ = v;
        n--;
    }
    u64 w = v;
    w |= w << 16;
    w |= w << 32;
    if (!((u64)p & 15) && n >= 32) { /* owner arrays: 64 bytes per loop with stp */
        u64 bytes = (n * 2) & ~63UL;
        fill_words(p, w, bytes);
        p += bytes / 2;
        n -= bytes / 2;
    }
    u64 *q = (u64 *)p;
    for (; n >= 4; n -= 4)
        *(volatile u64 *)q++ = w;
    p = (u16 *)q;
    while (n--)
        *p++ = v;
}

u64 strlen(const char *s)
{
    u64 n = 0;
    while (s[n])
        n++;
    return n;
}

int strncmp(const char *a, const char *b, u64 n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b)
            return (u8)*a - (u8)*b;
        if (!*a)
            return 0;
    }
    return 0;
}

/* ---- paravirtual calls ---- */
u64 smc0(u64 fn, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5)
{
    struct smc_regs r = {{fn, a1, a2, a3, a4, a5}};
    smc_call(&r);
    return r.x[0];
}

/*
 * Linux's cond_resched(): loops that do page-sized work call it once per page. Every 256 pages
 * (1 MiB of work, about a millisecond) it makes a YIELD call: a point where the PC is exact, so
 * the host can stop the vCPU there without replaying anything.
 */
void cond_resched(void)
{
    static unsigned int pages;
    if ((++pages & 255) == 0)
        smc0(VMEM_CALL_YIELD, 0, 0, 0, 0, 0);
}

/*
 * A safe point now: for a loop that repeats host requests without waiting (the -EAGAIN retry
 * of the virtio-mem work item). Without one the host can only stop the vCPU asynchronously,
 * which replays instructions (emulator/vcpu.py); with one, a config interrupt the host posts
 * meanwhile arrives at the next poll, as Linux's would preempt the worker.
 */
void cpu_yield(void)
{
    smc0(VMEM_CALL_YIELD, 0, 0, 0, 0, 0);
}

u64 now_ns(void)
{
    return smc0(VMEM_CALL_TIME, 0, 0, 0, 0, 0);
}

void report(u64 what, u64 a, u64 b, u64 c, u64 d)
{
    smc0(VMEM_CALL_STATUS, what, a, b, c, d);
}

/* ---- console ---- */
static u64 uart;      /* bss: nothing in .data, the image may be re-entered without a reload */
static int mid_line;

void console_init(u64 uart_base)
{
    uart = uart_base ? uart_base : ABI_UART_BASE;
    mid_line = 0;
}

static void putc_raw(char c)
{
    mmio_write8(uart ? uart : ABI_UART_BASE, (u8)c);
}

struct outbuf {
    char *buf;
    u64 len, cap;
};

static void out_c(struct outbuf *o, char c)
{
    if (o->len + 1 < o->cap)
        o->buf[o->len] = c;
    o->len++;
}

static void out_num(struct outbuf *o, u64 v, unsigned base, int neg, int width, int zero)
{
    char tmp[24];
    int n = 0;
    do {
        unsigned d = (unsigned)(v % base);
        tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    int len = n + (neg ? 1 : 0);
    if (neg && zero)
        out_c(o, '-');
    for (; width > len; width--)
        out_c(o, zero ? '0' : ' ');
    if (neg && !zero)
        out_c(o, '-');
    while (n)
        out_c(o, tmp[--n]);
}

static u64 vformat(char *buf, u64 cap, const char *fmt, __builtin_va_list ap)
{
    struct outbuf o = {buf, 0, cap};
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            out_c(&o, *fmt);
            continue;
        }
        fmt++;
        int zero = 0, width = 0, lng = 0;
        if (*fmt == '0') {
            zero = 1;
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') {
            lng++;
            fmt++;
        }
        switch (*fmt) {
        case 'd': {
            s64 v = lng ? __builtin_va_arg(ap, long) : __builtin_va_arg(ap, int);
            out_num(&o, v < 0 ? (u64)-v : (u64)v, 10, v < 0, width, zero);
            break;
        }
        case 'u': {
            u64 v = lng ? __builtin_va_arg(ap, unsigned long) : __builtin_va_arg(ap, unsigned int);
            out_num(&o, v, 10, 0, width, zero);
            break;
        }
        case 'x': {
            u64 v = lng ? __builtin_va_arg(ap, unsigned long) : __builtin_va_arg(ap, unsigned int);
            out_num(&o, v, 16, 0, width, zero);
            break;
        }
        case 'p': {
            u64 v = (u64)__builtin_va_arg(ap, void *);
            out_c(&o, '0');
            out_c(&o, 'x');
            out_num(&o, v, 16, 0, width, zero);
            break;
        }
        case 'c':
            out_c(&o, (char)__builtin_va_arg(ap, int));
            break;
        case 's': {
            const char *s = __builtin_va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int l = (int)strlen(s);
            for (; width > l; width--)
                out_c(&o, ' ');
            while (*s)
                out_c(&o, *s++);
            break;
        }
        case '%':
            out_c(&o, '%');
            break;
        case 0:
            fmt--;
            break;
        default:
            out_c(&o, '%');
            out_c(&o, *fmt);
            break;
        }
    }
    if (cap)
        buf[o.len < cap ? o.len : cap - 1] = 0;
    return o.len < cap ? o.len : cap - 1;
}

static void console_write(const char *s, u64 n)
{
    char pfx[32];
    for (u64 i = 0; i < n; i++) {
        if (!mid_line) {
            u64 t = now_ns() / 1000;
            struct { u64 a, b; } tv = {t / 1000000, t % 1000000};
            /* "[    0.123456] " like dmesg */
            char *p = pfx;
            u64 l = 0;
            {
                char tmp[24];
                int k = 0;
                u64 v = tv.a;
                do {
                    tmp[k++] = (char)('0' + v % 10);
                    v /= 10;
                } while (v);
                p[l++] = '[';
                for (int w = k; w < 5; w++)
                    p[l++] = ' ';
                while (k)
                    p[l++] = tmp[--k];
                p[l++] = '.';
                u64 f = tv.b;
                for (int d = 5; d >= 0; d--) {
                    p[l + (u64)d] = (char)('0' + f % 10);
                    f /= 10;
                }
                l += 6;
                p[l++] = ']';
                p[l++] = ' ';
            }
            for (u64 j = 0; j < l; j++)
                putc_raw(pfx[j]);
            mid_line = 1;
        }
        putc_raw(s[i]);
        if (s[i] == '\n')
            mid_line = 0;
    }
}

int printk(const char *fmt, ...)
{
    char buf[256];
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    u64 n = vformat(buf, sizeof(buf), fmt, ap);
    __builtin_va_end(ap);
    console_write(buf, n);
    return (int)n;
}
