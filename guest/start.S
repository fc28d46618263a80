/*
 * Entry, exception vectors, the SMC helper and the two fault-prone accessors of the vmemlab
 * guest. Entered at EL1h with the MMU off, x0 = boot-info address.
 */

#define FRAME_SIZE 288 /* x0..x30, elr, spsr, esr, far, vector (+pad): see struct exc_frame */
#define EFAULT 14

    .section .text.boot, "ax"
    .global _start
_start:
    mov     x19, x0                     /* boot info */
    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  adrp    x1, vectors
    add     x1, x1, :lo12:vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    bl      kmain
3:  b       3b

/* u64 smc_call(struct smc_regs *r): x0..x5 in, x0..x5 out */
    .text
    .global smc_call
smc_call:
    mov     x9, x0
    ldp     x0, x1, [x9]
    ldp     x2, x3, [x9, #16]
    ldp     x4, x5, [x9, #32]
    smc     #0
    stp     x0, x1, [x9]
    stp     x2, x3, [x9, #16]
    stp     x4, x5, [x9, #32]
    ret

/* long rogue_store(u64 addr, u64 value): 0, or -EFAULT through the exception table */
    .global rogue_store
rogue_store:
.Lrogue_insn:
    str     x1, [x0]
    mov     x0, #0
    ret
.Lrogue_fixup:
    mov     x0, #-EFAULT
    ret

/* long probe_load(u64 addr, u64 *value): 0, or -EFAULT through the exception table */
    .global probe_load
probe_load:
.Lprobe_insn:
    ldr     x2, [x0]
    str     x2, [x1]
    mov     x0, #0
    ret
.Lprobe_fixup:
    mov     x0, #-EFAULT
    ret

    .section __ex_table, "a"
    .balign 8
    .quad   .Lrogue_insn, .Lrogue_fixup, 1     /* EX_STORE */
    .quad   .Lprobe_insn, .Lprobe_fixup, 2     /* EX_LOAD */

/* ---- exception vectors: 16 entries of 0x80 bytes, 2 KiB aligned ---- */
    .text
    .balign 2048
    .global vectors
vectors:
    .irp    n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp]
    mov     x0, #\n
    b       exc_common
    .endr

    .balign 0x80
exc_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x1, elr_el1
    stp     x30, x1, [sp, #240]
    mrs     x1, spsr_el1
    mrs     x2, esr_el1
    stp     x1, x2, [sp, #256]
    mrs     x1, far_el1
    stp     x1, x0, [sp, #272]
    mov     x0, sp
    bl      do_exception
    ldp     x30, x1, [sp, #240]
    msr     elr_el1, x1
    ldr     x1, [sp, #256]
    msr     spsr_el1, x1
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldp     x0, x1, [sp]
    add     sp, sp, #FRAME_SIZE
    eret
