"""Host memory of a hugetlb backend (``memory-backend-memfd,hugetlb=on,hugetlbsize=2M``,
``memory-backend-file,mem-path=/dev/hugepages/...``), as the host would account it.

vmemlab does not take huge pages from the host (it may have none): the region is ordinary
anonymous memory, and this class makes its *accounting* follow hugetlbfs:

* the host has no shared zero page for it: a read of unplugged memory populates a whole huge
  page (QEMU 7.2 + Linux: reference/qemu-transcripts/13_hugetlb.txt, "each read cost one huge
  page"). Stage 2 still answers such a read with zeros; :meth:`populate` then charges the huge
  pages it touched. With VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE negotiated (QEMU's ``auto``
  turns it on for backends without a shared zero page) the guest never reads there;
* memory is resident in whole huge pages: a page the guest touched counts with all of its
  huge page (``resident_pages`` rounds up), so the host view shows host memory per block
  in huge-page steps.
"""

from __future__ import annotations

from emulator.backing import HOST_PAGE_SIZE, HostMemory

MiB = 1 << 20
GiB = 1 << 30
HUGE_PAGE_SIZES = (2 * MiB, GiB)  # what vmemlab's model host offers (x86: 2 MiB and 1 GiB)


class HugePageMemory(HostMemory):
    """A hugetlb-backed region; ``page_size`` is its huge page size."""

    def __init__(self, gpa: int, size: int, name: str, page_size: int) -> None:
        if page_size not in HUGE_PAGE_SIZES or size % page_size:
            raise ValueError(f"{name}: {size:#x} bytes in {page_size:#x}-byte huge pages")
        super().__init__(gpa, size, name)
        self.page_size = page_size

    def populate(self, offset: int, size: int) -> int:
        """The host faulted in every huge page of [offset, offset + size) (a read of memory
        without a shared zero page); returns the bytes newly charged."""
        first = offset // self.page_size * self.page_size
        before = self.resident_bytes(first, offset + size - first)
        for at in range(first, offset + size, self.page_size):
            self.view[at] = self.view[at]  # one exclusive host page marks the huge page
        return self.resident_bytes(first, offset + size - first) - before

    def resident_pages(self, offset: int = 0, size: int | None = None) -> bytearray:
        """Per host page, 1 if its huge page holds memory: huge pages are all or nothing."""
        size = self.size - offset if size is None else size
        start = offset // self.page_size * self.page_size
        end = -(-(offset + size) // self.page_size) * self.page_size
        vec = super().resident_pages(start, end - start)
        step = self.page_size // HOST_PAGE_SIZE
        for i in range(0, len(vec), step):
            if vec.find(1, i, i + step) >= 0:
                vec[i : i + step] = b"\x01" * step
        skip = (offset - start) // HOST_PAGE_SIZE
        return vec[skip : skip + -(-size // HOST_PAGE_SIZE)]
