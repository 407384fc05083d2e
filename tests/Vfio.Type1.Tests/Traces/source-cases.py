"""Writes source-cases.json (run from this directory): synthetic cases in the kernel-trace schema for variants the
public trace and readme-cases.json do not cover (other argsz/flags combinations, error precedence, boundaries near
the 39-bit aperture, the MSI window and 2^64, VADDR sequences, RLIMIT_MEMLOCK byte boundaries, dma_entry_limit
accounting, v1 specifics, group/container ordering). Each expected answer is derived from the kernel source (5.15's
drivers/vfio/vfio_iommu_type1.c and vfio.c, checked against 6.3's for what changed up to 6.1); the function that
decides it is named in the case's desc."""
import json, os, struct
HERE = os.path.dirname(os.path.abspath(__file__))
from tracekit import *  # noqa: F401,F403 (the shared step builders)
def limit(n): return st("SET_MODULE_PARAM", args={"name": "vfio_iommu_type1.dma_entry_limit", "value": n})
def rlimit(b): return st("SETRLIMIT_MEMLOCK", args={"soft_bytes": h(b)})
def nocap(b): return [cap(False), rlimit(b)]

# GET_INFO, as readme-cases.py builds it (checked there against the public trace)
def full_info(avail):
    mig = struct.pack("<HHI", 2, 1, 56) + struct.pack("<I", 0) + b"\0"*4 + struct.pack("<QQ", 0x1000, 0x10000000)
    dav = struct.pack("<HHII", 3, 1, 68, avail)
    rng = struct.pack("<HHIII", 1, 1, 0, 2, 0) + struct.pack("<QQQQ", 0, 0xfedfffff, 0xfef00000, 0x7fffffffff)
    return mig + dav + rng
def info(argsz, avail=65535):
    buf = bytearray(b"\xa5"*1024); struct.pack_into("<I", buf, 0, argsz & 0xffffffff)
    req = 24 + 92
    struct.pack_into("<IIQ", buf, 0, argsz if argsz >= req else req, 3, 0x40201000)
    if argsz >= 20: struct.pack_into("<I", buf, 16, 24 if argsz >= req else 0)
    if argsz >= req: buf[24:116] = full_info(avail)
    out = {"argsz": struct.unpack_from("<I", buf, 0)[0], "flags": h(struct.unpack_from("<I", buf, 4)[0]),
           "iova_pgsizes": h(struct.unpack_from("<Q", buf, 8)[0]), "cap_offset": h(struct.unpack_from("<I", buf, 16)[0]),
           "raw": buf[:min(argsz, 256)].hex()}
    return st("GET_INFO", "C", {"argsz": argsz, "prefill": "all bytes after argsz are 0xa5 before the call"}, out=out)

cases = []
def case(name, desc, steps, buffers=()):
    assert name not in [c["name"] for c in cases], name
    cases.append({"name": name, "desc": desc, "complete": True, "setup": {"buffers": list(buffers)}, "steps": steps})

# ================= container / group
WIDE = [11, 12, 13, 16, 31, 32, 63, 64, 0xffffffff, 0x100000001, 0x100000003, 0x10000000a]
case("container.check_extension.wide_values",
     "CHECK_EXTENSION of numbers past UPDATE_VADDR and of 64-bit values whose low 32 bits name a real extension -> 0, with no group, "
     "with a group and with a TYPE1v2 backend: vfio_ioctl_check_extension passes the unsigned long on and "
     "vfio_iommu_type1_check_extension switches on all 64 bits",
     [open_c()] + [ext(e, 0) for e in WIDE] + [open_g(), setc()] + [ext(e, 0) for e in WIDE[-4:]] + [setiommu(3)] +
     [ext(e, 0) for e in WIDE] + [ext(3, 1), ext(10, 1)] + ending())
case("container.set_iommu.wide_types",
     "SET_IOMMU(0), (11), (0xffffffff), (0x100000001), (0x100000003) -> ENODEV: vfio_ioctl_set_iommu asks each driver's CHECK_EXTENSION "
     "with the full unsigned long and no driver claims them; the container stays unset, TYPE1 (v1) then works and reports v1 extensions",
     [open_c(), open_g(), setc()] + [setiommu(t, **err("ENODEV")) for t in (0, 11, 0xffffffff, 0x100000001, 0x100000003)] +
     [ext(10, 0), setiommu(1), ext(1, 1), ext(3, 1), ext(9, 1), ext(10, 1), ext(4, 0), setiommu(0x100000003, **err("EINVAL"))] + ending())
case("container.set_iommu.after_unset",
     "After GROUP_UNSET_CONTAINER the container has no group: SET_IOMMU -> EINVAL (vfio_ioctl_set_iommu: empty group_list); "
     "re-attached it takes a different type (TYPE1 after TYPE1v2)",
     prelude() + [st("GROUP_UNSET_CONTAINER", "G"), setiommu(3, **err("EINVAL")), ext(10, 0), setc(), setiommu(1), ext(10, 1)] + ending())
case("group.status.argsz_variants",
     "GROUP_GET_STATUS argsz 0 and 7 -> EINVAL with nothing written; 8 and 4096 accepted and argsz read back unchanged "
     "(vfio_group_fops_unl_ioctl / vfio_group_ioctl_get_status: minsz = 8)",
     [open_c(), open_g(), status(0, 0, **err("EINVAL")), status(7, 0, **err("EINVAL")), status(8, 1), status(4096, 1), setc(),
      status(7, 0, **err("EINVAL")), status(4096, 3), setiommu(3), status(9, 3)] + ending())
case("group.unset_twice_and_reopen",
     "UNSET twice -> EINVAL the 2nd time (vfio_group_unset_container: no container); opening the group twice -> EBUSY "
     "(vfio_group_fops_open: the group is already open), still EBUSY while attached",
     [open_c(), open_g(), open_g(**err("EBUSY")), st("GROUP_UNSET_CONTAINER", "G", **err("EINVAL")), setc(), setiommu(3),
      st("GROUP_UNSET_CONTAINER", "G"), st("GROUP_UNSET_CONTAINER", "G", **err("EINVAL")), open_g(**err("EBUSY")),
      status(8, 1), st("CLOSE", "G"), open_g(), st("CLOSE", "G"), st("CLOSE", "C"), vmlck(0)])
case("group.set_container.second_container",
     "A group in container C cannot be set to C2 (EINVAL, vfio_group_set_container: group->container already set); after UNSET it can, "
     "and C2 takes a backend while C has none (MAP on C -> EINVAL)",
     [open_c(), open_c("C2"), open_g(), setc(), setiommu(3), setc("C2", **err("EINVAL")), setiommu(3, c="C2", **err("EINVAL")),
      st("GROUP_UNSET_CONTAINER", "G"), setc("C2"), setiommu(3, c="C2"), ext(10, 1, c="C2"),
      mp(va("B0"), I0, P, **err("EINVAL")), st("MAP_DMA", "C2", {"argsz": 32, "flags": "0x3", "vaddr": va("B0"), "iova": h(I0), "size": h(P)}), vmlck(4),
      st("GROUP_UNSET_CONTAINER", "G"), vmlck(0), st("CLOSE", "G"), st("CLOSE", "C2"), st("CLOSE", "C"), vmlck(0)],
     [buf("B0", P, before=0)])
case("group.get_device_fd.after_unset",
     "GET_DEVICE_FD after the device fd was closed and the group left its container -> EINVAL (6.1 vfio_group_get_device_fd: the name resolves, "
     "then no container); an unknown name -> ENODEV",
     prelude() + [st("GROUP_GET_DEVICE_FD", "G", {"name": "$BDF"}, out={"handle": "D"}), st("CLOSE", "D"), st("GROUP_UNSET_CONTAINER", "G"),
      st("GROUP_GET_DEVICE_FD", "G", {"name": "$BDF"}, **err("EINVAL")), st("GROUP_GET_DEVICE_FD", "G", {"name": "0000:00:1f.7"}, **err("ENODEV")),
      st("CLOSE", "G"), st("CLOSE", "C"), vmlck(0)])

# ================= map
case("map.msi_window_edges",
     "The MSI hole [0xfee00000,0xfeefffff]: maps crossing either edge -> EINVAL; the page just below and just above map; an UNMAP covering "
     "both and the hole removes both (vfio_iommu_iova_dma_valid needs one whole valid range; vfio_dma_do_unmap)",
     prelude() + [mp(ab(0x200000000000), 0xfedff000, 2*P, **err("EINVAL")), mp(ab(0x200000000000), 0xfeeff000, 2*P, **err("EINVAL")),
      mp(ab(0x200000000000), 0xfed00000, 0x200000, **err("EINVAL")), mp(va("B0"), 0xfedff000, P), mp(va("B0", P), 0xfef00000, P), vmlck(8),
      mp(va("B0"), 0xfedff000, 2*P, **err("EEXIST")), um(0xfedff000, 0x102000, removed=2*P), vmlck(0), info(512)] + ending(),
     [buf("B0", 2*P)])
case("map.aperture_and_wrap_edges",
     "Near 2^39 and 2^64: [0x7ffffff000,+2P) -> EINVAL (beyond the aperture), [0x7fffffe000,+2P) maps; iova 0 maps; iova 0xfffffffffffff000 size P "
     "does not wrap but is out of range -> EINVAL; size 2^39 from 0 spans the MSI hole -> EINVAL (and once mappings exist, [2^36,+2^39) overlaps one -> EEXIST first) "
     "(vfio_dma_do_map: wrap check iova + size - 1 < iova, then vfio_iommu_iova_dma_valid)",
     prelude() + [mp(ab(0x200000000000), 0, 0x8000000000, **err("EINVAL")), mp(ab(0x200000000000), 0x7ffffff000, 2*P, **err("EINVAL")), mp(va("B0"), 0x7fffffe000, 2*P),
      mp(va("B0", 2*P), 0, P), mp(ab(0x200000000000), 0xfffffffffffff000, P, **err("EINVAL")),
      mp(ab(0x200000000000), 0xffffffffffffe000, 0x2000, **err("EINVAL")), mp(ab(0x200000000000), 0xffffffffffffe000, 0x3000, **err("EINVAL")),
      mp(ab(0x200000000000), 0x1000000000, 0x8000000000, **err("EEXIST")), mp(ab(0x200000000000), 0x8000000000, 0x1000, **err("EINVAL")),
      vmlck(12), info(512, avail=65533), um(0x7fffffe000, 0x2000), um(0, P), um(0x7fffffe000, 0x8000000000 - 0x7fffffe000 + 0x1000, removed=0), vmlck(0)] + ending(),
     [buf("B0", 3*P)])
case("map.flags_and_argsz_precedence",
     "MAP flags 0, 4 (VADDR alone on nothing), 8, 0x10, WRITE|VADDR; argsz 31 with good flags; argsz 0 with VADDR: EINVAL except VADDR alone "
     "on an empty range -> ENOENT (vfio_iommu_type1_map_dma checks argsz/flags mask, vfio_dma_do_map prot/VADDR exclusivity, then ENOENT)",
     prelude() + [mp(va("B0"), I0, P, flags=0, **err("EINVAL")), mp(va("B0"), I0, P, flags=4, **err("ENOENT")), mp(va("B0"), I0, P, flags=8, **err("EINVAL")),
      mp(va("B0"), I0, P, flags=0x10, **err("EINVAL")), mp(va("B0"), I0, P, flags=6, **err("EINVAL")), mp(va("B0"), I0, P, argsz=31, **err("EINVAL")),
      mp(va("B0"), I0, P, flags=4, argsz=0, **err("EINVAL")), mp(va("B0"), I0, P, flags=0xb, **err("EINVAL")), vmlck(0), info(512)] + ending(),
     [buf("B0", P)])
case("map.adjacent.below_and_between",
     "existing [I0+4P,I0+8P); maps [I0,I0+4P) (adjacent below) and then [I0+8P,I0+12P); one more page inside the run -> EEXIST, a page "
     "straddling the last boundary -> EEXIST (vfio_find_dma overlap test)",
     prelude() + [mp(va("B0", 4*P), I0 + 4*P, 4*P), mp(va("B0"), I0, 4*P), mp(va("B0", 8*P), I0 + 8*P, 4*P), mp(va("B0"), I0 + 11*P, 2*P, **err("EEXIST")),
      mp(va("B0"), I0 - P, 2*P, **err("EEXIST")), mp(va("B0"), I0 + 12*P, P), vmlck(52), um(I0, 12*P, removed=12*P), um(I0 + 12*P, P), vmlck(0)] + ending(),
     [buf("B0", 16*P)])

# ================= unmap
M3 = lambda: [mp(va("B0"), I0, 4*P), mp(va("B0", 4*P), I0 + 8*P, 4*P), mp(va("B0", 8*P), I0 + 16*P, 4*P)]
case("unmap.flags_combinations",
     "UNMAP flags 8, 0x80000000, ALL|GET_DIRTY_BITMAP (argsz 24 and 48), ALL with size P, ALL with size 2^64-P -> EINVAL, size unchanged "
     "(vfio_iommu_type1_unmap_dma mask and DIRTY exclusivity, vfio_dma_do_unmap iova||size check); ALL|VADDR iova 0 size 0 invalidates all three "
     "(size 12P), then MAP(VADDR) restores them and UNMAP ALL removes them",
     prelude() + M3() + [um(0, 0, flags=8, **err("EINVAL")), um(I0, 4*P, flags=0x80000000, **err("EINVAL")), um(0, 0, flags=3, **err("EINVAL")),
      umbm(0, 0, 8, flags=3, **err("EINVAL")), um(0, P, flags=2, **err("EINVAL")), um(0, 0xfffffffffffff000, flags=2, **err("EINVAL")),
      um(0, 0, flags=6, removed=12*P), vmlck(48), mp(va("B0"), I0, 4*P, flags=4), mp(va("B0", 4*P), I0 + 8*P, 4*P, flags=4),
      mp(va("B0", 8*P), I0 + 16*P, 4*P, flags=4), um(0, 0, flags=2, removed=12*P), vmlck(0), info(512)] + ending(),
     [buf("B0", 12*P)])
case("unmap.bisect_end_and_wrap",
     "UNMAP [I0+8P,I0+10P) (ends inside M2) and [I0+4P,I0+10P) -> EINVAL; iova 0xfffffffffffff000 size 2P (wrap) -> EINVAL; [I0+4P,I0+12P) "
     "(hole + all of M2) -> 4P (vfio_dma_do_unmap v2 bisect checks); iova I0 size 2^64-I0 ends exactly at 2^64: it passes the wrap check (iova + size - 1) "
     "but iova + size is 0, so vfio_find_dma_first_node finds no node (dma->iova >= start + size) -> success with size 0, M1 and M3 stay; size 2^64-P from 0 removes them",
     prelude() + M3() + [um(I0 + 8*P, 2*P, **err("EINVAL")), um(I0 + 4*P, 6*P, **err("EINVAL")), um(0xfffffffffffff000, 2*P, **err("EINVAL")),
      um(I0 + 4*P, 8*P, removed=4*P), vmlck(32), um(I0, (1 << 64) - I0, removed=0), vmlck(32), um(0, 0xfffffffffffff000, removed=8*P), vmlck(0), info(512)] + ending(),
     [buf("B0", 12*P)])
case("unmap.all.vaddr_empty_and_rollback",
     "UNMAP ALL|VADDR on an empty container -> 0, size 0; with M3 already invalid, ALL|VADDR -> EINVAL and M1, M2 are un-marked (MAP(VADDR) on M1 -> EINVAL), "
     "M3 re-validated, ALL|VADDR then marks all three (vfio_dma_do_unmap invalidate_vaddr rollback loop)",
     prelude() + [um(0, 0, flags=6, removed=0)] + M3() + [um(I0 + 16*P, 4*P, flags=4), um(0, 0, flags=6, **err("EINVAL")),
      mp(va("B1"), I0, 4*P, flags=4, **err("EINVAL")), mp(va("B1", 8*P), I0 + 16*P, 4*P, flags=4), um(0, 0, flags=6, removed=12*P),
      mp(va("B1"), I0, 4*P, flags=4), um(I0 + 8*P, 4*P, flags=4, **err("EINVAL")), vmlck(48), info(512, avail=65532), um(0, 0, flags=2, removed=12*P), vmlck(0)] + ending(),
     [buf("B0", 12*P), buf("B1", 12*P, seed=64)])
case("unmap.vaddr_bisect_and_unaligned",
     "UNMAP(VADDR) is held to the v2 rules: a range bisecting M2 -> EINVAL, unaligned size -> EINVAL, nothing marked (a later MAP(VADDR) on M2 -> EINVAL); "
     "a range covering the hole and M2 marks only M2 (vfio_dma_do_unmap)",
     prelude() + M3() + [um(I0 + 8*P, 2*P, flags=4, **err("EINVAL")), um(I0 + 8*P, 0x800, flags=4, **err("EINVAL")), mp(va("B0", 4*P), I0 + 8*P, 4*P, flags=4, **err("EINVAL")),
      um(I0 + 4*P, 8*P, flags=4, removed=4*P), mp(va("B0", 4*P), I0 + 8*P, 4*P, flags=4), vmlck(48)] + ending(),
     [buf("B0", 12*P)])

# ================= v1
case("v1.dirty_pages_eacces",
     "TYPE1 (v1) container: every DIRTY_PAGES call -> EACCES before argsz/flags are looked at (vfio_iommu_type1_dirty_pages: !iommu->v2); "
     "UNMAP with GET_DIRTY_BITMAP -> EINVAL (tracking never on); plain UNMAP still works",
     prelude(1) + [mp(va("B0"), I0, 4*P), dirty(1, **err("EACCES")), dirty(2, **err("EACCES")), dirty(0, **err("EACCES")), dirty(1, argsz=0, **err("EACCES")),
      getbm(I0, 16*P, 8, **err("EACCES")), umbm(I0, 4*P, 8, **err("EINVAL")), um(I0, 4*P, removed=4*P), vmlck(0)] + ending(),
     [buf("B0", 4*P)])
case("v1.unmap.hole_then_partial",
     "TYPE1 (v1): a request starting in the hole and ending inside M2 removes all of M2 (size 4P > covered part); UNMAP(VADDR) starting inside M3 -> 0 size 0; "
     "UNMAP(VADDR) covering only M3's first page marks all of M3; UNMAP ALL removes the rest (vfio_dma_do_unmap: !v2 && iova > dma->iova stops)",
     prelude(1) + M3() + [um(I0 + 4*P, 6*P, removed=4*P), vmlck(32), um(I0 + 17*P, P, flags=4, removed=0), um(I0 + 16*P, P, flags=4, removed=4*P),
      mp(va("B0"), I0 + 16*P, P, flags=4, **err("EINVAL")), mp(va("B0", 8*P), I0 + 16*P, 4*P, flags=4), um(0, 0, flags=2, removed=8*P), vmlck(0), info(512)] + ending(),
     [buf("B0", 12*P)])
case("v1.info_and_limit",
     "TYPE1 (v1) GET_INFO is the same chain as v2 (vfio_iommu_type1_get_info does not look at v2); with dma_entry_limit 2, a v1 first-page unmap "
     "removes the whole mapping and frees its slot",
     [limit(2), open_c(), open_g(), setc(), setiommu(1), info(512, avail=2), mp(va("B0"), I0, 4*P), mp(va("B0"), I0 + 8*P, P), mp(va("B0"), I0 + 16*P, P, **err("ENOSPC")),
      info(512, avail=0), um(I0, P, removed=4*P), info(512, avail=1), mp(va("B0"), I0 + 16*P, P), vmlck(8)] + ending(),
     [buf("B0", 4*P, before=5)])

# ================= vaddr
case("vaddr.map_vaddr_enoent_precedence",
     "MAP(VADDR) with no mapping in the range -> ENOENT, also beyond the aperture, in the MSI hole and with no dma slot left (the VADDR branch of "
     "vfio_dma_do_map returns before the ENOSPC and IOVA-range checks); size 0 / unaligned / iova wrap -> EINVAL first; a range partly over an "
     "invalidated mapping -> EINVAL",
     [limit(1), open_c(), open_g(), setc(), setiommu(3), mp(va("B0"), I0, 4*P), um(I0, 4*P, flags=4),
      mp(va("B0"), 0x8000000000, P, flags=4, **err("ENOENT")), mp(va("B0"), 0xfee00000, P, flags=4, **err("ENOENT")), mp(va("B0"), I0 + 8*P, P, flags=4, **err("ENOENT")),
      mp(va("B0"), I0 + 8*P, 0, flags=4, **err("EINVAL")), mp(va("B0"), I0 + 8*P, 0x800, flags=4, **err("EINVAL")), mp(va("B0"), 0xfffffffffffff000, 2*P, flags=4, **err("EINVAL")),
      mp(va("B0"), I0 - P, 2*P, flags=4, **err("EINVAL")), mp(va("B0"), I0 + P, 2*P, flags=4, **err("EINVAL")), mp(va("B0"), I0 + 8*P, P, **err("ENOSPC")),
      mp(va("B0"), I0, 4*P, flags=4), vmlck(16)] + ending(),
     [buf("B0", 4*P, before=5)])
case("vaddr.new_map_while_invalid",
     "While M1's vaddr is invalid, a new MAP elsewhere pins and counts normally, GET_BITMAP and UNMAP of other mappings work; MAP(VADDR) restores M1 "
     "(vfio_dma_do_map; no waiting in the type1 MAP/UNMAP paths)",
     prelude() + [mp(va("B0"), I0, 4*P), um(I0, 4*P, flags=4), mp(va("B1"), I0 + 8*P, 2*P), vmlck(24), dirty(1), getbm(I0, 16*P, 8, "0f03000000000000"),
      um(I0 + 8*P, 2*P), vmlck(16), mp(va("B1"), I0, 4*P, flags=4), vmlck(16), dirty(2), um(I0, 4*P), vmlck(0)] + ending(),
     [buf("B0", 4*P), buf("B1", 4*P, seed=64)])

# ================= dirty
case("dirty.get_argsz_and_bitmap_sizes",
     "GET_BITMAP argsz 47 -> EINVAL, 48 ok (vfio_iommu_type1_dirty_pages: argsz - 8 >= sizeof(struct vfio_iommu_type1_dirty_bitmap_get) = 40); "
     "65 pages need 16 bytes (verify_bitmap_size: 8 -> EINVAL); pgsize 0x3000 -> EINVAL (not the IOMMU's smallest); START twice and STOP twice -> 0",
     prelude() + [mp(va("B0"), I0, 4*P), dirty(1), dirty(1), getbm(I0, 16*P, 8, argsz=47, **err("EINVAL")), getbm(I0, 16*P, 8, "0f00000000000000"),
      getbm(I0, 65*P, 8, **err("EINVAL")), getbm(I0, 65*P, 16, "0f00000000000000" + "00"*8), getbm(I0, 16*P, 8, pgsize=0x3000, **err("EINVAL")),
      getbm(I0, 64*P, 8, "0f00000000000000"), dirty(2), dirty(2), getbm(I0, 16*P, 8, **err("EINVAL"))] + ending(),
     [buf("B0", 4*P)])
case("dirty.get_empty_ranges",
     "GET_BITMAP over ranges holding no mapping -> 0 and the bitmap (prefill 0x5a) untouched: a hole, beyond the aperture; iova 0xfffffffffffff000 size P -> EINVAL "
     "(unlike MAP/UNMAP, vfio_iommu_type1_dirty_pages tests iova + size < iova, so a range ending at 2^64 counts as a wrap), size 2P too; a range with M1 at page offset 4 ORs the user's 0x5a word into M1's shifted bits (vfio_iova_dirty_bitmap, update_user_bitmap)",
     prelude() + [mp(va("B0"), I0, 4*P), dirty(1), getbm(I0 + 4*P, 16*P, 8, prefill=0x5a), getbm(0xfffffffffffff000, P, 8, prefill=0x5a, **err("EINVAL")),
      getbm(0x8000000000, 64*P, 8, prefill=0x5a), getbm(0xfffffffffffff000, 2*P, 8, prefill=0x5a, **err("EINVAL")),
      getbm(I0 - 4*P, 8*P, 8, "fa5a5a5a5a5a5a5a", prefill=0x5a), dirty(2)] + ending(),
     [buf("B0", 4*P)])
case("dirty.get_adjacent_mappings",
     "Adjacent M1=[I0,+4P), M2=[I0+4P,+2P) in one word: 1st query over both -> bits 0..5 (M2's shifted bitmap ORed with M1's word); a 2nd query over "
     "M2 alone (shift 0) still shows the 4 shifted-in bits that M2's bitmap_clear left behind -> bits 0..5 (update_user_bitmap + vfio_iova_dirty_bitmap); "
     "a range bisecting M1 -> EINVAL; STOP+START resets",
     prelude() + [mp(va("B0"), I0, 4*P), mp(va("B0", 4*P), I0 + 4*P, 2*P), dirty(1), getbm(I0, 8*P, 8, bits_hex(8, [[0, 6]])),
      getbm(I0 + 4*P, 2*P, 8, bits_hex(8, [[0, 6]])), getbm(I0 + 2*P, 4*P, 8, **err("EINVAL")), dirty(2), dirty(1),
      getbm(I0 + 4*P, 2*P, 8, bits_hex(8, [[0, 2]])), dirty(2)] + ending(),
     [buf("B0", 6*P)])
case("dirty.unmap_bitmap_crossing",
     "UNMAP with GET_DIRTY_BITMAP over the hole and two mappings at page offsets 2 and 8 from the unmap iova: bits 2..5 and 8..9 (offsets relative to the "
     "unmap iova, update_user_bitmap per mapping) and size 8P; argsz 47 -> EINVAL; a bitmap too small for the range -> EINVAL (verify_bitmap_size), size unchanged",
     prelude() + [mp(va("B0"), I0 + 2*P, 4*P), mp(va("B0", 4*P), I0 + 8*P, 2*P), dirty(1), umbm(I0, 10*P, 8, argsz=47, **err("EINVAL")),
      umbm(I0, 65*P, 8, **err("EINVAL")), umbm(I0, 10*P, 8, bits_hex(8, [[2, 4], [8, 2]]), removed=6*P), vmlck(0), dirty(2)] + ending(),
     [buf("B0", 6*P)])

# ================= memlock
case("memlock.rlimit_byte_boundaries",
     "No CAP: RLIMIT_MEMLOCK is used in pages rounded down (rlimit >> PAGE_SHIFT): 8P-1 -> limit 7: an 8-page map -> ENOMEM and nothing stays, 7 pages map; "
     "8P+0xfff -> limit 8: one more page maps, the next -> ENOMEM (vfio_pin_pages_remote / vfio_lock_acct)",
     prelude() + nocap(8*P - 1) + [mp(va("B0"), I0, 8*P, **err("ENOMEM")), vmlck(0), mp(va("B0"), I0, 7*P), vmlck(28), rlimit(8*P + 0xfff),
      mp(va("B0", 7*P), I0 + 8*P, P), vmlck(32), mp(va("B0", 8*P), I0 + 16*P, P, **err("ENOMEM")), vmlck(32), info(512, avail=65533)] + ending(),
     [buf("B0", 16*P)])
case("memlock.cap_regained_and_rlimit_zero",
     "CAP with RLIMIT_MEMLOCK 0: 4 pages map and count; without CAP one more page -> ENOMEM; with CAP again it maps; UNMAP uncharges whatever the cap "
     "(dma->lock_cap sampled per MAP in vfio_dma_do_map)",
     prelude() + [rlimit(0), mp(va("B0"), I0, 4*P), vmlck(16), cap(False), mp(va("B0", 4*P), I0 + 8*P, P, **err("ENOMEM")), vmlck(16), cap(True),
      mp(va("B0", 4*P), I0 + 8*P, P), vmlck(20), cap(False), um(I0, 4*P), vmlck(4), um(I0 + 8*P, P), vmlck(0)] + ending(),
     [buf("B0", 8*P)])
case("memlock.readonly_touched_counts",
     "No CAP, limit 2 pages: a READ-only map of touched (private, written) pages is charged like any other -> ENOMEM for 4 pages, 2 pages map "
     "(only the zero page is exempt: vfio_pin_pages_remote counts every non-reserved pfn)",
     prelude() + nocap(2*P) + [mp(va("B0"), I0, 4*P, flags=1, **err("ENOMEM")), vmlck(0), mp(va("B0"), I0, 2*P, flags=1), vmlck(8),
      mp(va("U"), I0 + 8*P, 4*P, flags=1), vmlck(8)] + ending(),
     [buf("B0", 4*P), buf("U", 4*P, fill="untouched")])

# ================= limit
case("limit.failed_maps_keep_slots",
     "dma_entry_limit 3: failed maps (EFAULT from an unmapped vaddr, EINVAL in the MSI hole, EEXIST) take no slot; UNMAP(VADDR) frees none; a bisecting "
     "UNMAP -> EINVAL frees none; UNMAP ALL frees all three (vfio_dma_do_map dma_avail--, vfio_remove_dma dma_avail++)",
     [limit(3), open_c(), open_g(), setc(), setiommu(3), mp(va("U"), I0, P, **err("EFAULT")), mp(va("B0"), 0xfee00000, P, **err("EINVAL")), info(512, avail=3),
      mp(va("B0"), I0, 4*P), mp(va("B0"), I0, P, **err("EEXIST")), mp(va("B0"), I0 + 8*P, P), mp(va("B0"), I0 + 16*P, P), info(512, avail=0),
      um(I0, 4*P, flags=4), mp(va("B0"), I0 + 24*P, P, **err("ENOSPC")), mp(va("B0"), I0, 4*P, flags=4), um(I0, 2*P, **err("EINVAL")),
      mp(va("B0"), I0 + 24*P, P, **err("ENOSPC")), um(0, 0, flags=2, removed=6*P), info(512, avail=3), vmlck(0)] + ending(),
     [buf("B0", 4*P, before=5), buf("U", P, prot="unmapped", fill="none", before=5)])
case("limit.large_value",
     "dma_entry_limit 0x7fffffff (above the 65535 default) before SET_IOMMU: DMA_AVAIL reports it; one map takes one (vfio_iommu_type1_open samples it)",
     [limit(0x7fffffff), open_c(), open_g(), setc(), setiommu(3), info(512, avail=0x7fffffff), mp(va("B0"), I0, 0x10000), info(512, avail=0x7ffffffe)] + ending(),
     [buf("B0", 0x10000, before=5)])

# ================= device
def edu(d, iova): return st("EDU_DMA", "D", {"dir": d, "iova": h(iova), "len": "0x800"}, out={"completed": True})
def rb(b, pages, pb): return st("READ_BUF", args={"buf": b, "pages": pages}, out={"page_bytes": pb})
case("device.dma_through_invalidated_vaddr",
     "After UNMAP(VADDR) the IOMMU mapping stays: a device write lands in B0's pinned pages; after a plain UNMAP it is blocked "
     "(vfio_dma_do_unmap with VADDR only marks the vfio_dma)",
     prelude() + [st("GROUP_GET_DEVICE_FD", "G", {"name": "$BDF"}, out={"handle": "D"}), mp(va("S"), 0x800000, P, flags=1), mp(va("B0"), I0, 2*P),
      edu("device_reads_iova", 0x800000), um(I0, 2*P, flags=4), edu("device_writes_iova", I0), rb("B0", 2, ["20..10", "11"]),
      um(I0, 2*P), edu("device_writes_iova", I0 + P), rb("B0", 2, ["20..10", "11"]), vmlck(4), st("CLOSE", "D")] + ending(),
     [buf("B0", 2*P, before=5), buf("S", P, seed=32, before=5)])

# ================= more, after the first run
def umbm_null(iova, size, removed=None, flags=1, **kw):
    ok = kw.get("ret", 0) == 0
    args = {"argsz": 48, "flags": h(flags), "iova": h(iova), "size": h(size), "bitmap": {"pgsize": h(P), "size": "0x8", "data": "NULL", "prefill": "0x0"}}
    return st("UNMAP_DMA", "C", args, out={"argsz": 48, "flags": h(flags), "iova": h(iova), "size": h(removed if (ok and removed is not None) else size)}, **kw)
case("dirty.unmap_null_bitmap",
     "UNMAP with GET_DIRTY_BITMAP and a NULL bitmap: access_ok(NULL) passes; over a range without mappings -> 0 size 0; over two mappings -> EFAULT "
     "from the first update_user_bitmap, before vfio_remove_dma, so nothing is removed or uncharged; a plain UNMAP then removes both (vfio_dma_do_unmap)",
     prelude() + [mp(va("B0"), I0, 4*P), mp(va("B0", 4*P), I0 + 8*P, 2*P), dirty(1), umbm_null(I0 + 16*P, 16*P, removed=0),
      umbm_null(I0, 16*P, **err("EFAULT")), vmlck(24), info(512, avail=65533), um(I0, 16*P, removed=6*P), vmlck(0), dirty(2)] + ending(),
     [buf("B0", 6*P)])
case("memlock.shared_untouched_counts",
     "No CAP, limit 2 pages: a READ map of never-written MAP_SHARED anonymous memory is charged (a shmem read fault allocates a page; only private "
     "anonymous memory reads the zero page, which is_invalid_reserved_pfn skips) -> 4 pages ENOMEM, 2 pages map and count",
     prelude() + nocap(2*P) + [mp(va("S"), I0, 4*P, flags=1, **err("ENOMEM")), vmlck(0), mp(va("S"), I0, 2*P, flags=1), vmlck(8)] + ending(),
     [buf("S", 4*P, fill="untouched", share="shared")])
case("map.vaddr_readonly_touched",
     "PROT_READ buffer of written pages: READ maps and counts; WRITE and READ|WRITE -> EFAULT (pin_user_pages with FOLL_WRITE on a read-only VMA), "
     "leaving nothing (vfio_pin_pages_remote / vaddr_get_pfns)",
     prelude() + [mp(va("R"), I0 + 8*P, 2*P, flags=2, **err("EFAULT")), mp(va("R"), I0 + 8*P, 2*P, flags=3, **err("EFAULT")), vmlck(0),
      mp(va("R"), I0, 2*P, flags=1), vmlck(8), info(512, avail=65534)] + ending(),
     [buf("R", 2*P, prot="r")])
case("group.set_container.non_container_files",
     "GROUP_SET_CONTAINER with the group's own fd or the device fd as container -> EINVAL (vfio_group_set_container: f_op is not the container's); "
     "the group stays attached to C",
     prelude() + [st("GROUP_GET_DEVICE_FD", "G", {"name": "$BDF"}, out={"handle": "D"}), st("GROUP_UNSET_CONTAINER", "G", **err("EBUSY")), st("CLOSE", "D"),
      st("GROUP_UNSET_CONTAINER", "G"), setc("G", **err("EINVAL")), status(8, 1), setc(), setiommu(3), status(8, 3)] + ending())
case("container.closed_container_device_fd",
     "With the container fd closed but the group still attached, GET_DEVICE_FD succeeds and mappings stay until UNSET (the group holds the container)",
     prelude() + [mp(va("B0"), I0, P), st("CLOSE", "C"), st("GROUP_GET_DEVICE_FD", "G", {"name": "$BDF"}, out={"handle": "D"}), vmlck(4),
      st("CLOSE", "D"), st("GROUP_UNSET_CONTAINER", "G"), vmlck(0), st("CLOSE", "G"), vmlck(0)],
     [buf("B0", P)])
case("v1.unmap.size_and_alignment",
     "TYPE1 (v1): UNMAP size 0, unaligned iova, unaligned size, wrap -> EINVAL as in v2 (vfio_dma_do_unmap checks before the v1 loop); a request from M1's "
     "start ending inside M2 removes both whole",
     prelude(1) + M3() + [um(I0, 0, **err("EINVAL")), um(I0 + 0x800, 4*P, **err("EINVAL")), um(I0, 0x800, **err("EINVAL")), um(0xfffffffffffff000, 2*P, **err("EINVAL")),
      um(I0, 9*P, removed=8*P), vmlck(16), um(I0 + 16*P, 0xfffffffffffff000 - I0 - 16*P, removed=4*P), vmlck(0)] + ending(),
     [buf("B0", 12*P)])
case("group.set_container.bad_fd_while_attached",
     "Group already in C: SET_CONTAINER with a closed fd (9999) -> EBADF, with /dev/null -> EINVAL, with C again -> EINVAL. 6.1's "
     "vfio_group_ioctl_set_container (vfio_main.c, after 'vfio: Fold VFIO_GROUP_SET_CONTAINER into vfio_group_set_container()') does fdget and the "
     "f_op check before it looks at group->container; 5.15's vfio_group_set_container checks container_users first (-EINVAL for all three)",
     prelude() + [st("OPEN", args={"path": "/dev/null"}, out={"handle": "N"}), st("GROUP_SET_CONTAINER", "G", {"container_fd": 9999}, **err("EBADF")),
      setc("N", **err("EINVAL")), setc(**err("EINVAL")), status(8, 3)] + ending() + [st("CLOSE", "N")])
case("group.get_device_fd.twice",
     "Two device fds from the same group: each holds a container user, so UNSET -> EBUSY until both are closed "
     "(vfio_device_open / vfio_device_assign_container count every open; vfio_group_ioctl_unset_container wants container_users == 1)",
     prelude() + [st("GROUP_GET_DEVICE_FD", "G", {"name": "$BDF"}, out={"handle": "D"}), st("GROUP_GET_DEVICE_FD", "G", {"name": "$BDF"}, out={"handle": "D2"}),
      mp(va("B0"), I0, P), st("CLOSE", "D"), st("GROUP_UNSET_CONTAINER", "G", **err("EBUSY")), vmlck(4), st("CLOSE", "D2"), st("GROUP_UNSET_CONTAINER", "G"),
      vmlck(0), st("CLOSE", "G"), st("CLOSE", "C"), vmlck(0)],
     [buf("B0", P)])
case("limit.resampled_by_new_backend",
     "dma_entry_limit 1 at the first SET_IOMMU; changed to 3 while that backend lives (no effect); after UNSET releases it a new SET_IOMMU samples 3 "
     "(vfio_iommu_type1_open copies dma_entry_limit into iommu->dma_avail)",
     [limit(1), open_c(), open_g(), setc(), setiommu(3), info(512, avail=1), limit(3), mp(va("B0"), I0, P), mp(va("B0"), I0 + P, P, **err("ENOSPC")),
      st("GROUP_UNSET_CONTAINER", "G"), vmlck(0), setc(), setiommu(3), info(512, avail=3), mp(va("B0"), I0, P), mp(va("B0"), I0 + P, P), info(512, avail=1)] + ending(),
     [buf("B0", P, before=5)])
case("map.overlap.variants",
     "existing [I0+4P,I0+8P); maps [I0+2P,I0+6P) (start), [I0+6P,I0+10P) (end), [I0+5P,I0+7P) (inside), [I0+7P,I0+8P) (last page), [I0+3P,I0+5P) -> EEXIST; "
     "[I0+3P,I0+4P) and [I0+8P,I0+9P) (adjacent) map (vfio_find_dma)",
     prelude() + [mp(va("B0"), I0 + 4*P, 4*P)] + [mp(va("B0"), I0 + a*P, n*P, **err("EEXIST")) for a, n in ((2, 4), (6, 4), (5, 2), (7, 1), (3, 2))] +
     [mp(va("B0"), I0 + 3*P, P), mp(va("B0"), I0 + 8*P, P), vmlck(24), info(512, avail=65532), um(I0, 16*P, removed=6*P), vmlck(0)] + ending(),
     [buf("B0", 4*P)])
case("memlock.failed_write_map_faults_in_pages",
     "No CAP, limit 4 pages, never-written private buffer: a READ|WRITE map of 8 pages -> ENOMEM, but vfio_pin_pages_remote's batch "
     "(vaddr_get_pfns -> pin_user_pages_remote with FOLL_WRITE) faulted all 8 in first, so the pages are the process's own now: a READ map of the same 8 "
     "pages is charged (-> ENOMEM) and one of 4 pages counts 16 KiB instead of pinning the zero page",
     prelude() + nocap(4*P) + [mp(va("U"), I0, 8*P, flags=3, **err("ENOMEM")), vmlck(0), mp(va("U"), I0, 8*P, flags=1, **err("ENOMEM")), vmlck(0),
      mp(va("U"), I0, 4*P, flags=1), vmlck(16), mp(va("Z"), I0 + 8*P, 8*P, flags=1), vmlck(16)] + ending(),
     [buf("U", 8*P, fill="untouched"), buf("Z", 8*P, fill="untouched")])

doc = {"schema": "vfio-type1-kernel-trace/1",
       "note": "Synthetic cases derived from the kernel source (not recorded): variants of the public families with the answers the 5.15/6.3 type1 code gives for 6.1.",
       "env": {"kernel_release": "6.1.0-56-amd64 (synthetic)", "group": "3", "device": "0000:00:03.0", "page_size": 4096},
       "finished": True, "case_count": len(cases), "cases": cases}
json.dump(doc, open(os.path.join(HERE, "source-cases.json"), "w"), indent=1)
print(len(cases), "cases")
