/*
 * Page-sized loops in assembly (like Linux's copy_page): 64 bytes per iteration with ldp/stp,
 * which is what keeps migration, allocation and kdump cheap under the emulator.
 */
    .text

/* void copy_page(void *dst, const void *src) */
    .global copy_page
copy_page:
    mov     x9, #4096
1:  ldp     x2, x3, [x1]
    ldp     x4, x5, [x1, #16]
    ldp     x6, x7, [x1, #32]
    ldp     x8, x10, [x1, #48]
    stp     x2, x3, [x0]
    stp     x4, x5, [x0, #16]
    stp     x6, x7, [x0, #32]
    stp     x8, x10, [x0, #48]
    add     x0, x0, #64
    add     x1, x1, #64
    subs    x9, x9, #64
    b.ne    1b
    ret

/* void fill_page(void *dst, u64 seed, u64 mul): word i = seed ^ (i * mul) */
    .global fill_page_asm
fill_page_asm:
    mov     x9, #512                    /* words */
    mov     x3, #0                      /* i * mul */
1:  eor     x4, x1, x3
    add     x3, x3, x2
    eor     x5, x1, x3
    add     x3, x3, x2
    eor     x6, x1, x3
    add     x3, x3, x2
    eor     x7, x1, x3
    add     x3, x3, x2
    stp     x4, x5, [x0]
    stp     x6, x7, [x0, #16]
    add     x0, x0, #32
    subs    x9, x9, #4
    b.ne    1b
    ret

/* u64 check_page(const void *src, u64 seed, u64 mul): 1 if every word matches, else 0 */
    .global check_page_asm
check_page_asm:
    mov     x9, #512
    mov     x3, #0
    mov     x10, #0                     /* OR of differences */
1:  ldp     x4, x5, [x0]
    ldp     x6, x7, [x0, #16]
    eor     x4, x4, x1
    eor     x4, x4, x3
    add     x3, x3, x2
    eor     x5, x5, x1
    eor     x5, x5, x3
    add     x3, x3, x2
    eor     x6, x6, x1
    eor     x6, x6, x3
    add     x3, x3, x2
    eor     x7, x7, x1
    eor     x7, x7, x3
    add     x3, x3, x2
    orr     x4, x4, x5
    orr     x6, x6, x7
    orr     x10, x10, x4
    orr     x10, x10, x6
    add     x0, x0, #32
    subs    x9, x9, #4
    b.ne    1b
    cmp     x10, #0
    cset    x0, eq
    ret

/* u64 or_page(const void *src): OR of all words (0: the page is all zero) */
    .global or_page
or_page:
    mov     x9, #4096
    mov     x10, #0
1:  ldp     x2, x3, [x0]
    ldp     x4, x5, [x0, #16]
    ldp     x6, x7, [x0, #32]
    ldp     x8, x11, [x0, #48]
    orr     x2, x2, x3
    orr     x4, x4, x5
    orr     x6, x6, x7
    orr     x8, x8, x11
    orr     x10, x10, x2
    orr     x10, x10, x4
    orr     x10, x10, x6
    orr     x10, x10, x8
    add     x0, x0, #64
    subs    x9, x9, #64
    b.ne    1b
    mov     x0, x10
    ret

/* void fill_words(void *dst, u64 word, u64 bytes): dst 16-byte aligned, bytes a multiple of 64 */
    .global fill_words
fill_words:
    cbz     x2, 2f
1:  stp     x1, x1, [x0]
    stp     x1, x1, [x0, #16]
    stp     x1, x1, [x0, #32]
    stp     x1, x1, [x0, #48]
    add     x0, x0, #64
    subs    x2, x2, #64
    b.ne    1b
2:  ret
