"""Step and buffer builders shared by the synthetic kernel-trace case generators (readme-cases.py, source-cases.py, fork-cases.py):
one step of the trace schema per call, with the defaults of the "std" prelude (container C, group G, TYPE1v2)."""
import struct
BM_DATA = "separate user buffer of `size` bytes (+64 guard bytes)"
I0 = 0x100000; P = 0x1000
def h(v): return hex(v)
def st(op, fd=None, args=None, ret=0, errno=None, out=None, proc=None):
    d = {"op": op}
    if fd: d["fd"] = fd
    if proc: d["proc"] = proc
    d["args"] = args or {}
    d["ret"] = ret; d["errno"] = errno; d["out"] = out or {}
    return d
def err(e): return dict(ret=-1, errno=e)
def open_c(handle="C"): return st("OPEN", args={"path": "/dev/vfio/vfio"}, out={"handle": handle})
def open_g(**kw):
    if kw: return st("OPEN", args={"path": "/dev/vfio/$GROUP"}, **kw)
    return st("OPEN", args={"path": "/dev/vfio/$GROUP"}, out={"handle": "G"})
def setc(c="C", **kw): return st("GROUP_SET_CONTAINER", "G", {"container": c}, **kw)
def setiommu(t=3, c="C", **kw): return st("SET_IOMMU", c, {"type": t}, **kw)
def prelude(t=3): return [open_c(), open_g(), setc(), setiommu(t)]
def ending(): return [st("GROUP_UNSET_CONTAINER", "G"), st("CLOSE", "G"), st("CLOSE", "C"), vmlck(0)]
def vmlck(kb): return st("READ_VMLCK", out={"locked_vm_kb": kb})
def ext(e, v, c="C"): return st("CHECK_EXTENSION", c, {"ext": e}, ret=v)
def status(argsz, flags, **kw):
    ok = kw.get("ret", 0) == 0
    return st("GROUP_GET_STATUS", "G", {"argsz": argsz}, out={"argsz": argsz, "flags": h(flags if ok else 0xa5a5a5a5)}, **kw)
def va(buf, off=0): return {"buf": buf, "off": h(off)}
def ab(a): return {"abs": h(a)}
def mp(vaddr, iova, size, flags=3, argsz=32, **kw):
    return st("MAP_DMA", "C", {"argsz": argsz, "flags": h(flags), "vaddr": vaddr, "iova": h(iova), "size": h(size)}, **kw)
def um(iova, size, flags=0, argsz=24, removed=None, **kw):
    ok = kw.get("ret", 0) == 0
    out = {"argsz": argsz, "flags": h(flags), "iova": h(iova), "size": h(removed if (ok and removed is not None) else size)}
    return st("UNMAP_DMA", "C", {"argsz": argsz, "flags": h(flags), "iova": h(iova), "size": h(size)}, out=out, **kw)
def setbits(data):
    runs=[]; start=-1; n=len(data)*8
    for i in range(n+1):
        s = i<n and (data[i//8]>>(i%8))&1
        if s and start<0: start=i
        elif not s and start>=0: runs.append([start,i-start]); start=-1
    return runs
def dirty(flags, argsz=8, **kw): return st("DIRTY_PAGES", "C", {"argsz": argsz, "flags": h(flags)}, **kw)
def raw_ioctl(fd, req, **kw): return st("RAW_IOCTL", fd, {"request": h(req), "arg": "64 zero bytes with argsz=64 in the first u32"}, **kw)
def buf(name, size, prot="rw", fill="touched", seed=16, before=4, holes=None, share="private"):
    b = {"name": name, "size": h(size), "prot": prot, "share": share, "fill": fill}
    if fill == "touched": b["seed"] = seed
    b["holes"] = holes or []; b["created_before_step"] = before
    return b
# GET_INFO ------------------------------------------------------------
def full_info(avail):
    mig = struct.pack("<HHI", 2, 1, 56) + struct.pack("<I", 0) + b"\0"*4 + struct.pack("<QQ", 0x1000, 0x10000000)
    assert len(mig) == 32
    dav = struct.pack("<HHII", 3, 1, 68, avail)
    rng = struct.pack("<HHIII", 1, 1, 0, 2, 0) + struct.pack("<QQQQ", 0, 0xfedfffff, 0xfef00000, 0x7fffffffff)
    assert len(rng) == 48
    return mig + dav + rng
def info(argsz, avail=65535, backend=True, errno=None):
    buf = bytearray(b"\xa5"*1024); struct.pack_into("<I", buf, 0, argsz & 0xffffffff)
    ok = backend and argsz >= 16 and not errno
    if ok:
        req = 24 + 92
        struct.pack_into("<IIQ", buf, 0, argsz if argsz >= req else req, 3, 0x40201000)
        if argsz >= 20:
            struct.pack_into("<I", buf, 16, 24 if argsz >= req else 0)
        if argsz >= req:
            buf[24:116] = full_info(avail)
    n = min(argsz, 256)
    out = {"argsz": struct.unpack_from("<I", buf, 0)[0], "flags": h(struct.unpack_from("<I", buf, 4)[0]),
           "iova_pgsizes": h(struct.unpack_from("<Q", buf, 8)[0]), "cap_offset": h(struct.unpack_from("<I", buf, 16)[0]),
           "raw": buf[:n].hex()}
    if errno: ok = False
    kw = {} if ok else err(errno or "EINVAL")
    return st("GET_INFO", "C", {"argsz": argsz, "prefill": "all bytes after argsz are 0xa5 before the call"}, out=out, **kw)

# Dirty-bitmap steps (DIRTY_PAGES GET_BITMAP, UNMAP_DMA with GET_DIRTY_BITMAP) and CAP_IPC_LOCK, shared by the
# source and variant case generators.
def bm_out(bmsize, result_hex, prefill):
    if result_hex is None: result_hex = ("%02x" % prefill) * bmsize
    b = bytes.fromhex(result_hex); assert len(b) == bmsize
    return {"bitmap_hex": result_hex[:512], "bitmap_set_bits": setbits(b), "guard_untouched": True}
def bitmap_arg(pgsize, bmsize, prefill): return {"pgsize": h(pgsize), "size": h(bmsize), "data": BM_DATA, "prefill": h(prefill)}
def getbm(iova, size, bmsize, result_hex=None, prefill=0, pgsize=P, argsz=48, **kw):
    args = {"argsz": argsz, "flags": "0x4", "iova": h(iova), "size": h(size), "bitmap": bitmap_arg(pgsize, bmsize, prefill)}
    return st("DIRTY_PAGES", "C", args, out=bm_out(bmsize, result_hex, prefill), **kw)
def umbm(iova, size, bmsize, result_hex=None, removed=None, prefill=0, pgsize=P, argsz=48, flags=1, **kw):
    ok = kw.get("ret", 0) == 0
    args = {"argsz": argsz, "flags": h(flags), "iova": h(iova), "size": h(size), "bitmap": bitmap_arg(pgsize, bmsize, prefill)}
    out = {"argsz": argsz, "flags": h(flags), "iova": h(iova), "size": h(removed if (ok and removed is not None) else size)}
    out.update(bm_out(bmsize, result_hex, prefill))
    return st("UNMAP_DMA", "C", args, out=out, **kw)
def bits_hex(nbytes, runs):
    b = bytearray(nbytes)
    for start, n in runs:
        for i in range(start, start + n): b[i // 8] |= 1 << (i % 8)
    return b.hex()
def cap(on): return st("SET_CAP_IPC_LOCK", args={"effective": on})
