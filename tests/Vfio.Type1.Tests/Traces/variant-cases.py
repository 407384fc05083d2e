"""Writes variant-cases.json (run from this directory): synthetic cases in the kernel-trace schema, the variants a test
author would write next to each public case (its siblings in the same family, in the public cases' own shape: the
M1/M2/M3 unmap layout followed by GET_INFO and a cleanup UNMAP, the std prelude and ending). Each expected answer is
derived from the kernel source: drivers/vfio/vfio_iommu_type1.c of 5.15.85 and 6.3.2, which agree on every path used
here (vfio_dma_do_map, vfio_dma_do_unmap, vfio_iommu_type1_unmap_dma, vfio_iommu_type1_dirty_pages,
vfio_iova_dirty_bitmap, update_user_bitmap, vfio_pin_pages_remote, vfio_iommu_type1_get_info), and from mm/mlock.c and
mm/gup.c for the process side; the function that decides each step is named in the case's desc."""
import json, os
HERE = os.path.dirname(os.path.abspath(__file__))
from tracekit import *  # noqa: F401,F403 (the shared step builders)

cases = []
def case(name, desc, steps, buffers=()):
    assert name not in [c["name"] for c in cases], name
    cases.append({"name": name, "desc": desc, "complete": True, "setup": {"buffers": list(buffers)}, "steps": steps})
def rlimit(b): return st("SETRLIMIT_MEMLOCK", args={"soft_bytes": h(b)})
def nocap(b): return [cap(False), rlimit(b)]
def mlock(v, n, **kw): return st("MLOCK", args={"addr": v, "len": h(n)}, **kw)
def munmap(b): return st("MUNMAP", args={"buf": b})
APERTURE = 0x8000000000
BAD = ab(0x200000000000)  # a never-mapped address: the steps using it fail before any pinning

# ================= unmap: the public M1/M2/M3 layout, one request per case, then GET_INFO and the cleanup UNMAP
M3 = lambda: [mp(va("B0"), I0, 4*P), mp(va("B0", 4*P), I0 + 8*P, 4*P), mp(va("B0", 8*P), I0 + 16*P, 4*P)]
M3DESC = "Mappings M1=[I0,I0+4P) M2=[I0+8P,I0+12P) M3=[I0+16P,I0+20P), I0=0x100000, P=4K; "
def m3case(name, what, steps, left):
    """left: pages still mapped after `steps` (the GET_INFO avail and the cleanup UNMAP's size follow from it)."""
    nmaps = {0: 0, 4: 1, 8: 2, 12: 3}[left]
    case(name, M3DESC + what, prelude() + M3() + steps + [vmlck(left * 4), info(512, avail=65535 - nmaps),
         um(0, APERTURE, removed=left * P)] + ending(), [buf("B0", 12*P)])
m3case("unmap.exact_middle", "unmap exactly M2 (vfio_dma_do_unmap: no bisection, one vfio_remove_dma)", [um(I0 + 8*P, 4*P)], 8)
m3case("unmap.cover_all_with_holes", "unmap [I0,I0+20P): all three and the holes between -> 12P", [um(I0, 20*P, removed=12*P)], 0)
m3case("unmap.hole_to_hole", "unmap [I0+4P,I0+16P) (starts and ends in a hole, covers M2) -> 4P", [um(I0 + 4*P, 12*P, removed=4*P)], 8)
m3case("unmap.end_one_past", "unmap [I0+6P,I0+17P): starts in the hole, ends one page into M3 -> EINVAL, nothing removed",
       [um(I0 + 6*P, 11*P, **err("EINVAL"))], 12)
m3case("unmap.size_unaligned", "unmap iova I0 size 4P+0x800 -> EINVAL (size & (pgsize - 1))", [um(I0, 4*P + 0x800, **err("EINVAL"))], 12)
m3case("unmap.wrap", "unmap iova 0xfffffffffffff000 size 2P -> EINVAL (iova + size - 1 < iova)", [um(0xfffffffffffff000, 2*P, **err("EINVAL"))], 12)
m3case("unmap.to_top_of_space", "unmap from M2's start to 2^64 - P (no wrap) -> M2 and M3, 8P",
       [um(I0 + 8*P, (1 << 64) - P - (I0 + 8*P), removed=8*P)], 4)
m3case("unmap.unknown_flag", "UNMAP flags 0x8 and 0x10 -> EINVAL (vfio_iommu_type1_unmap_dma mask)",
       [um(I0, 4*P, flags=8, **err("EINVAL")), um(I0, 4*P, flags=0x10, **err("EINVAL"))], 12)
m3case("unmap.all.basic", "UNMAP flags ALL iova 0 size 0 removes everything (12P); again -> 0",
       [um(0, 0, flags=2, removed=12*P), um(0, 0, flags=2, removed=0)], 0)
m3case("unmap.all.with_vaddr_then_plain", "UNMAP ALL|VADDR marks all three (12P); UNMAP ALL then removes them, invalid or not",
       [um(0, 0, flags=6, removed=12*P), um(0, 0, flags=2, removed=12*P)], 0)
m3case("unmap.dirty_flag_without_tracking", "UNMAP GET_DIRTY_BITMAP over M2 with a good bitmap but tracking never started -> EINVAL "
       "(vfio_dma_do_unmap: !iommu->dirty_page_tracking); argsz 47 -> EINVAL", [umbm(I0 + 8*P, 4*P, 8, **err("EINVAL")),
       umbm(I0 + 8*P, 4*P, 8, argsz=47, **err("EINVAL"))], 12)
m3case("unmap.dirty_flag_with_all", "UNMAP GET_DIRTY_BITMAP|ALL (argsz 48, tracking on) -> EINVAL (vfio_iommu_type1_unmap_dma)",
       [dirty(1), umbm(0, 0, 8, flags=3, **err("EINVAL")), dirty(2)], 12)
m3case("unmap.dirty_bitmap_all_three", "Tracking on: UNMAP GET_DIRTY_BITMAP over [I0,I0+20P) -> 12P, bits 0..3, 8..11, 16..19 (each mapping's "
       "shifted bitmap ORed with the word the earlier ones wrote: update_user_bitmap)",
       [dirty(1), umbm(I0, 20*P, 8, bits_hex(8, [[0, 4], [8, 4], [16, 4]]), removed=12*P), dirty(2)], 0)
m3case("unmap.dirty_bitmap_hole_first", "Tracking on: UNMAP GET_DIRTY_BITMAP over [I0+4P,I0+12P) into an 0xff-prefilled 16-byte bitmap: M2 at bit 4 "
       "(shift 4: the user's whole word ORed in -> 0xff..ff), word 1 untouched -> size 4P",
       [dirty(1), umbm(I0 + 4*P, 8*P, 16, "ff" * 16, removed=4*P, prefill=0xff), dirty(2)], 8)

# ================= map: siblings of the public map.* cases
def mcase(name, what, steps, bufs, left=0, nmaps=0):
    case(name, what, prelude() + steps + [vmlck(left * 4), info(512, avail=65535 - nmaps)] + ending(), bufs)
B4 = [buf("B0", 4*P)]
mcase("map.basic.read_only", "MAP_DMA READ only, 4 touched pages (charged: vfio_pin_pages_remote counts every non-reserved pfn)",
      [mp(va("B0"), I0, 4*P, flags=1)], B4, 4, 1)
mcase("map.iova_unaligned_half", "MAP_DMA iova I0+0x800 -> EINVAL", [mp(va("B0"), I0 + 0x800, P, **err("EINVAL"))], B4)
mcase("map.vaddr_unaligned", "MAP_DMA vaddr B0+0x800 -> EINVAL ((size | iova | vaddr) & (pgsize - 1))", [mp(va("B0", 0x800), I0, P, **err("EINVAL"))], B4)
mcase("map.size_zero", "MAP_DMA size 0 -> EINVAL", [mp(va("B0"), I0, 0, **err("EINVAL"))], B4)
mcase("map.size_unaligned_large", "MAP_DMA size 4P+0x10 -> EINVAL", [mp(va("B0"), I0, 4*P + 0x10, **err("EINVAL"))], B4)
mcase("map.iova_wrap", "MAP_DMA iova 0xfffffffffffff000 size 2P -> EINVAL (iova wrap)", [mp(BAD, 0xfffffffffffff000, 2*P, **err("EINVAL"))], B4)
mcase("map.vaddr_wrap", "MAP_DMA vaddr 0xfffffffffffff000 size 2P -> EINVAL (vaddr wrap), before any pinning",
      [mp(ab(0xfffffffffffff000), I0, 2*P, **err("EINVAL"))], B4)
mcase("map.vaddr_zero", "MAP_DMA from vaddr 0 -> EFAULT (no VMA: pin_user_pages_remote), nothing left behind",
      [mp(ab(0), I0, P, **err("EFAULT"))], B4)
mcase("map.vaddr_kernel", "MAP_DMA from a kernel address (0xffff888000000000, no wrap) -> EFAULT, nothing left behind",
      [mp(ab(0xffff888000000000), I0, P, **err("EFAULT"))], B4)
mcase("map.vaddr_top_page", "MAP_DMA from vaddr 0xfffffffffffff000 size P (ends at 2^64, no wrap) -> EFAULT",
      [mp(ab(0xfffffffffffff000), I0, P, **err("EFAULT"))], B4)
mcase("map.aperture_beyond", "MAP_DMA at 2^39 and at 2^39 - P with 2 pages -> EINVAL (vfio_iommu_iova_dma_valid)",
      [mp(BAD, APERTURE, P, **err("EINVAL")), mp(BAD, APERTURE - P, 2*P, **err("EINVAL"))], B4)
mcase("map.msi_window_end", "MAP_DMA at 0xfeeff000 (last MSI page) -> EINVAL; at 0xfef00000 (first page after) maps",
      [mp(BAD, 0xfeeff000, P, **err("EINVAL")), mp(va("B0"), 0xfef00000, P), um(0xfef00000, P)], B4)
mcase("map.iova_zero", "MAP_DMA at iova 0 (first usable range starts at 0) maps; UNMAP of it",
      [mp(va("B0"), 0, 4*P), vmlck(16), um(0, 4*P)], B4)
mcase("map.size_huge", "MAP_DMA size 2^62 from I0 (no wrap for iova or vaddr) -> EINVAL (outside the IOVA ranges), before pinning",
      [mp(va("B0"), I0, 1 << 62, **err("EINVAL"))], B4)
mcase("map.vaddr_hole_at_end", "MAP_DMA 4 pages whose last page is unmapped -> EFAULT, nothing left; the first 3 pages then map",
      [mp(va("H"), I0, 4*P, **err("EFAULT")), vmlck(0), mp(va("H"), I0, 3*P)], [buf("H", 4*P, holes=[3])], 3, 1)
mcase("map.write_only_untouched", "MAP_DMA WRITE only of never-written private memory: FOLL_WRITE faults in private pages, all charged",
      [mp(va("U"), I0, 4*P, flags=2)], [buf("U", 4*P, fill="untouched")], 4, 1)
mcase("map.readonly_then_rw_untouched", "READ map of untouched memory pins the zero page (0 charged); a READ|WRITE map of the same vaddr at another IOVA "
      "faults in private pages (charged 4); after unmapping it, a READ map of the same vaddr pins those private pages (charged)",
      [mp(va("U"), I0, 4*P, flags=1), vmlck(0), mp(va("U"), I0 + 8*P, 4*P), vmlck(16), um(I0 + 8*P, 4*P), vmlck(0), mp(va("U"), I0 + 16*P, 4*P, flags=1)],
      [buf("U", 4*P, fill="untouched")], 4, 2)

# ================= memlock / mlock
case("memlock.mlock_twice_not_double_counted",
     "No CAP, limit 4 pages: mlock of the same 4 pages twice counts them once (do_mlock: count_mm_mlocked_page_nr; mlock_fixup leaves VM_LOCKED "
     "areas alone); a MAP of them then needs 4 more pages -> ENOMEM",
     prelude() + nocap(4*P) + [mlock(va("B0"), 4*P), vmlck(16), mlock(va("B0"), 4*P), vmlck(16), mlock(va("B0", 2*P), 2*P), vmlck(16),
      mp(va("B0"), I0, P, **err("ENOMEM")), vmlck(16), rlimit(8*P), mp(va("B0"), I0, 4*P), vmlck(32)] + ending()[:-1] + [vmlck(16)],
     [buf("B0", 4*P)])
case("memlock.mlock_populates_untouched",
     "mlock of never-written private RW memory populates it with FOLL_WRITE (populate_vma_page_range), so a later READ map pins private pages, "
     "charged again (not the zero page); munmap of the buffer drops the mlock part of locked_vm but the pinned pages stay charged until UNMAP",
     prelude() + [mlock(va("U"), 4*P), vmlck(16), mp(va("U"), I0, 4*P, flags=1), vmlck(32), munmap("U"), vmlck(16), um(I0, 4*P), vmlck(0)] + ending(),
     [buf("U", 4*P, fill="untouched")])
case("memlock.mlock_readonly_untouched_zero_page",
     "mlock of a never-written PROT_READ private buffer populates it read-only (the zero page): counted for the mlock only; a READ map of it pins "
     "the zero page, uncharged",
     prelude() + [mlock(va("R"), 4*P), vmlck(16), mp(va("R"), I0, 4*P, flags=1), vmlck(16), um(I0, 4*P), vmlck(16)] + ending()[:-1] + [vmlck(16)],
     [buf("R", 4*P, prot="r", fill="untouched")])
case("memlock.mlock_prot_none_and_unmapped",
     "mlock of a PROT_NONE buffer locks and counts it, then -> ENOMEM (__mm_populate: check_vma_flags refuses PROT_NONE without FOLL_FORCE, "
     "-EFAULT, which __mlock_posix_error_return makes -ENOMEM); mlock over a range whose 3rd page is unmapped -> ENOMEM, but "
     "apply_vma_lock_flags has already locked the area before the hole (mlock_fixup per VMA, then -ENOMEM at the gap): +2 pages; the page after the hole locks alone",
     prelude() + [mlock(va("N"), 2*P, **err("ENOMEM")), vmlck(8), mlock(va("H"), 4*P, **err("ENOMEM")), vmlck(16), mlock(va("H", 3*P), P), vmlck(20)] + ending()[:-1] + [vmlck(20)],
     [buf("N", 2*P, prot="none", fill="none"), buf("H", 4*P, holes=[2])])
case("memlock.no_cap_batch_boundary",
     "No CAP, limit 600 pages: a 1024-page map (two pin batches of 512) -> ENOMEM after the first batch was charged, all undone; 600 pages map; "
     "one more page -> ENOMEM (vfio_pin_pages_remote: mm->locked_vm + lock_acct + 1 > limit)",
     prelude() + nocap(600*P) + [mp(va("B0"), I0, 1024*P, **err("ENOMEM")), vmlck(0), info(512), mp(va("B0"), I0, 600*P), vmlck(2400),
      mp(va("B0", 600*P), 0x1000000, P, **err("ENOMEM")), vmlck(2400), um(I0, 600*P), vmlck(0)] + ending(),
     [buf("B0", 1024*P)])
case("memlock.no_cap_exact_fit_after_unmap",
     "No CAP, limit 4 pages: 4 pages map, a 5th -> ENOMEM; after UNMAP the same 4 pages map at another IOVA",
     prelude() + nocap(4*P) + [mp(va("B0"), I0, 4*P), mp(va("B0"), I0 + 8*P, P, **err("ENOMEM")), um(I0, 4*P), vmlck(0),
      mp(va("B0"), I0 + 8*P, 4*P), vmlck(16), info(512, avail=65534)] + ending(),
     [buf("B0", 4*P)])

# ================= vaddr
case("vaddr.map_vaddr_twice",
     "UNMAP(VADDR) of M1, MAP(VADDR) restores it; a second MAP(VADDR) -> EINVAL (no longer invalid); a second UNMAP(VADDR) works again (4P)",
     prelude() + [mp(va("B0"), I0, 4*P), um(I0, 4*P, flags=4), mp(va("B1"), I0, 4*P, flags=4), mp(va("B1"), I0, 4*P, flags=4, **err("EINVAL")),
      um(I0, 4*P, flags=4), mp(va("B0"), I0, 4*P, flags=4), vmlck(16), info(512, avail=65534)] + ending(),
     [buf("B0", 4*P), buf("B1", 4*P, seed=32)])
case("vaddr.unmap_vaddr_with_dirty_tracking",
     "Tracking on: UNMAP(VADDR) of M1 keeps its IOMMU mapping, so GET_BITMAP still reports it dirty; UNMAP with GET_DIRTY_BITMAP of the invalid "
     "M1 removes it and reports its pages (update_user_bitmap does not look at vaddr_invalid)",
     prelude() + [mp(va("B0"), I0, 4*P), dirty(1), um(I0, 4*P, flags=4), getbm(I0, 4*P, 8, bits_hex(8, [[0, 4]])),
      umbm(I0, 4*P, 8, bits_hex(8, [[0, 4]]), removed=4*P), vmlck(0), dirty(2)] + ending(),
     [buf("B0", 4*P)])
case("vaddr.unset_while_invalid",
     "UNMAP(VADDR) of M1, then GROUP_UNSET_CONTAINER: the backend goes with it (locked_vm 0); after SET_CONTAINER + SET_IOMMU the IOVA is free",
     prelude() + [mp(va("B0"), I0, 4*P), um(I0, 4*P, flags=4), vmlck(16), st("GROUP_UNSET_CONTAINER", "G"), vmlck(0), setc(), setiommu(3),
      mp(va("B0"), I0, 4*P, flags=4, **err("ENOENT")), mp(va("B0"), I0, 4*P), vmlck(16), info(512, avail=65534)] + ending(),
     [buf("B0", 4*P)])
case("vaddr.unmap_vaddr_all_three_then_one_again",
     "UNMAP(VADDR) over [I0,I0+20P) marks M1..M3 (12P); UNMAP(VADDR) of M2 alone -> EINVAL (already invalid, nothing to roll back); MAP(VADDR) of M2 "
     "with the wrong size -> EINVAL, with its size -> 0; MAP over M3 -> EEXIST",
     prelude() + M3() + [um(I0, 20*P, flags=4, removed=12*P), um(I0 + 8*P, 4*P, flags=4, **err("EINVAL")), mp(va("B0", 4*P), I0 + 8*P, 2*P, flags=4, **err("EINVAL")),
      mp(va("B0", 4*P), I0 + 8*P, 4*P, flags=4), mp(va("B0"), I0 + 16*P, P, **err("EEXIST")), vmlck(48), info(512, avail=65532),
      um(0, APERTURE, removed=12*P)] + ending(),
     [buf("B0", 12*P)])

# ================= dirty
case("dirty.get_exact_mapping_repeated",
     "GET_BITMAP with iova = M2 exactly (shift 0): bits 0..3, the same on a second query (no stale bits without a shift)",
     prelude() + M3() + [dirty(1), getbm(I0 + 8*P, 4*P, 8, bits_hex(8, [[0, 4]])), getbm(I0 + 8*P, 4*P, 8, bits_hex(8, [[0, 4]])), dirty(2),
      um(0, APERTURE, removed=12*P)] + ending(),
     [buf("B0", 12*P)])
case("dirty.get_after_unmap_of_middle",
     "Tracking on, M2 unmapped: a query over [I0,I0+20P) -> bits 0..3 and 16..19; a 2nd query shows M3's stale bits (README #1): M3's bitmap kept "
     "the bits above its own 4 after the first shift -> bits 0..3, 16..19, 32..35",
     prelude() + M3() + [dirty(1), um(I0 + 8*P, 4*P), getbm(I0, 20*P, 8, bits_hex(8, [[0, 4], [16, 4]])),
      getbm(I0, 20*P, 8, bits_hex(8, [[0, 4], [16, 4], [32, 4]])), dirty(2), um(0, APERTURE, removed=8*P)] + ending(),
     [buf("B0", 12*P)])
case("dirty.get_bitmap_bigger_than_needed",
     "GET_BITMAP over 16 pages with a 32-byte 0xff-prefilled bitmap and M1 at offset 0: only word 0 is written (bits 4..63 zeroed), words 1..3 keep 0xff",
     prelude() + [mp(va("B0"), I0, 4*P), dirty(1), getbm(I0, 16*P, 32, "0f00000000000000" + "ff" * 24, prefill=0xff), dirty(2)] + ending(),
     [buf("B0", 4*P)])

# ================= info / container / group
case("info.argsz_huge",
     "GET_INFO argsz 0xffffffff: the whole chain is written, argsz read back unchanged (vfio_iommu_type1_get_info: argsz >= sizeof(info) + caps.size)",
     prelude() + [info(0xffffffff), info(117), info(4096)] + ending())
case("group.status.after_close_container",
     "GROUP_GET_STATUS after the container fd is closed with the group attached: still VIABLE|CONTAINER_SET (the group holds the container)",
     prelude() + [st("CLOSE", "C"), status(8, 3), st("GROUP_UNSET_CONTAINER", "G"), status(8, 1), st("CLOSE", "G"), vmlck(0)])

# ================= device (edu: 0x800-byte transfers; its internal buffer is loaded first in every case)
def edu(d, iova): return st("EDU_DMA", "D", {"dir": d, "iova": h(iova), "len": "0x800"}, out={"completed": True})
def rb(b, pages, pb): return st("READ_BUF", args={"buf": b, "pages": pages}, out={"page_bytes": pb})
DEV = st("GROUP_GET_DEVICE_FD", "G", {"name": "$BDF"}, out={"handle": "D"})
case("device.dma_after_munmap_of_source",
     "S mapped READ, then munmap()ed: its page stays pinned and mapped (README #18), so the device still reads S's bytes through the IOMMU and "
     "writes them into B0",
     prelude() + [DEV, mp(va("S"), 0x800000, P, flags=1), munmap("S"), vmlck(4), edu("device_reads_iova", 0x800000), mp(va("B0"), I0, P),
      edu("device_writes_iova", I0), rb("B0", 1, ["20..10"]), vmlck(8), st("CLOSE", "D")] + ending(),
     [buf("B0", P, before=5), buf("S", P, seed=32, before=5)])
case("device.dma_reads_zero_page",
     "A READ map of never-written memory pins the zero page: the device reads zeros through it and writes them into B0's first half",
     prelude() + [DEV, mp(va("U"), 0x800000, P, flags=1), vmlck(0), edu("device_reads_iova", 0x800000), mp(va("B0"), I0, P),
      edu("device_writes_iova", I0), rb("B0", 1, ["00..10"]), vmlck(4), st("CLOSE", "D")] + ending(),
     [buf("B0", P, before=5), buf("U", P, fill="untouched", before=5)])
case("container.close_group_then_reattach",
     "Mappings, tracking on, CLOSE G: the backend is released (locked_vm 0, MAP -> EINVAL); the group re-opened and set to the same C needs SET_IOMMU "
     "again and starts empty (DMA_AVAIL 65535, tracking off: GET_BITMAP -> EINVAL)",
     prelude() + [mp(va("B0"), I0, 4*P), dirty(1), st("CLOSE", "G"), vmlck(0), mp(va("B0"), I0, P, **err("EINVAL")), open_g(), setc(),
      mp(va("B0"), I0, P, **err("EINVAL")), setiommu(3), info(512), getbm(I0, 4*P, 8, **err("EINVAL")), mp(va("B0"), I0, 4*P), vmlck(16)] + ending(),
     [buf("B0", 4*P)])
case("container.close_device_last",
     "Device fd open: CLOSE G and CLOSE C keep everything (locked_vm 16); the closed container fd -> EBADF; closing the device fd releases the group, "
     "the container and the mappings; the group then opens again",
     prelude() + [DEV, mp(va("B0"), I0, 4*P), st("CLOSE", "G"), st("CLOSE", "C"), vmlck(16), mp(va("B0"), I0 + 8*P, P, **err("EBADF")),
      st("CLOSE", "D"), vmlck(0), open_g(), status(8, 1), st("CLOSE", "G"), vmlck(0)],
     [buf("B0", 4*P, before=5)])

print(len(cases), "cases")
doc = {"schema": "vfio-type1-kernel-trace/1",
       "note": "Synthetic cases derived from the kernel source (not recorded): siblings of the public cases in each family, with the answers the 5.15/6.3 type1 code gives for 6.1.",
       "env": {"kernel_release": "6.1.0 (synthetic)", "group": 3, "device": "0000:00:03.0", "page_size": 4096},
       "finished": True, "case_count": len(cases), "cases": cases}
json.dump(doc, open(os.path.join(HERE, "variant-cases.json"), "w"), indent=1)
