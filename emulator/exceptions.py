"""AArch64 synchronous exception entry, done by hand because Unicorn cannot raise one.

When stage 2 refuses an access, or the guest hits an instruction Unicorn hands to the host
(UDEF, SVC, BRK, HVC), the machine delivers the exception the way the CPU would: syndrome in
ESR_EL1, faulting address in FAR_EL1, return address in ELR_EL1, saved PSTATE in SPSR_EL1, then
EL1h with interrupts masked at VBAR_EL1 + 0x200 ("current EL with SPx, synchronous").
"""

from __future__ import annotations

from unicorn import arm64_const as arm
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

EC_UNKNOWN = 0x00
EC_IABT_CURRENT_EL = 0x21
EC_DABT_CURRENT_EL = 0x25
IL = 1 << 25  # 32-bit instruction
WNR = 1 << 6  # write, not read
DFSC_TRANSLATION_L3 = 0x07  # nothing maps the address
DFSC_PERMISSION_L3 = 0x0F  # mapped, but not for this access
DFSC_SYNC_EXTERNAL = 0x10  # the memory system answered with an error (QEMU: ARMFault_SyncExternal)
_FSC = {"translation": DFSC_TRANSLATION_L3, "permission": DFSC_PERMISSION_L3,
        "external": DFSC_SYNC_EXTERNAL}
PSTATE_EL1H_MASKED = 0x3C5  # EL1h with D, A, I, F masked: what exception entry sets
SYNC_CURRENT_EL_SPX = 0x200
VECTOR_TABLE_SIZE = 0x800
SPSR_EL1 = (3, 0, 4, 0, 0)  # op0, op1, CRn, CRm, op2


def abort_syndrome(access: str, fault: str) -> int:
    """ESR for a refused ``access`` ("read", "write", "fetch") at the current EL.

    ``fault``: "translation", "permission" or "external". An external abort for a decode
    error (nothing at that address) has EA = 0, as QEMU's ``arm_extabort_type`` gives for
    ``MEMTX_DECODE_ERROR``.
    """
    fsc = _FSC[fault]
    if access == "fetch":
        return (EC_IABT_CURRENT_EL << 26) | IL | fsc
    return (EC_DABT_CURRENT_EL << 26) | IL | (WNR if access == "write" else 0) | fsc


def unknown_syndrome() -> int:
    """ESR for an exception with an unknown reason (what UDEF reports)."""
    return (EC_UNKNOWN << 26) | IL


def in_vectors(uc: UcAArch64, pc: int) -> bool:
    vbar = uc.reg_read(arm.UC_ARM64_REG_VBAR_EL1)
    return bool(vbar) and vbar <= pc < vbar + VECTOR_TABLE_SIZE


def enter_sync_exception(uc: UcAArch64, esr: int, far: int, elr: int) -> bool:
    """Take a synchronous exception to EL1; False if the guest has no vector table yet."""
    vbar = uc.reg_read(arm.UC_ARM64_REG_VBAR_EL1)
    if vbar == 0:
        return False
    uc.cpr_write(*SPSR_EL1, uc.reg_read(arm.UC_ARM64_REG_PSTATE))
    uc.reg_write(arm.UC_ARM64_REG_ELR_EL1, elr)
    uc.reg_write(arm.UC_ARM64_REG_ESR_EL1, esr)
    uc.reg_write(arm.UC_ARM64_REG_FAR_EL1, far)
    uc.reg_write(arm.UC_ARM64_REG_PSTATE, PSTATE_EL1H_MASKED)
    uc.reg_write(arm.UC_ARM64_REG_PC, vbar + SYNC_CURRENT_EL_SPX)
    return True
