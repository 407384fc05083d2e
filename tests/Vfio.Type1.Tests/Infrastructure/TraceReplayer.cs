using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests.Infrastructure;

/// <summary>What the library answered to one step, in the trace's vocabulary.</summary>
internal sealed record StepResult(int Ret, string? Errno, Dictionary<string, object> Out);

/// <summary>
/// Runs one trace case against the library through the raw <c>Ioctl</c> entries and the process model,
/// on a platform shaped like the recorded one (QEMU VT-d legacy mode, 39-bit, 2M+1G superpages, one PCI
/// device alone in its group).
/// </summary>
internal sealed class TraceReplayer : IDisposable
{
    private readonly Type1Bed _bed;
    private readonly PciDevice _dev;
    private readonly Dictionary<string, (object File, int Fd)> _handles = [];
    private readonly Dictionary<string, (ulong Va, ulong Size)> _buffers = [];
    private readonly byte[] _edu = new byte[4096];
    private readonly Dictionary<(ulong, byte, ProcessAddressSpace), ulong> _bitmaps = [];
    private readonly Dictionary<ProcessAddressSpace, int> _stdStreams = [];
    private ProcessAddressSpace? _child;

    public TraceReplayer()
    {
        _bed = new Type1Bed();
        _dev = _bed.AddDevice("0000:00:03.0");
    }

    public ProcessAddressSpace Parent => _bed.Proc;

    /// <summary>Creates a case buffer in the parent, or in the forked child when the step it precedes runs there.</summary>
    public void CreateBuffer(JsonElement b, bool inChild = false)
    {
        string name = b.GetProperty("name").GetString()!;
        ulong size = Hex(b.GetProperty("size"));
        string prot = b.GetProperty("prot").GetString()!;
        bool shared = b.TryGetProperty("share", out JsonElement sh) && sh.GetString() == "shared";
        string fill = b.TryGetProperty("fill", out JsonElement f) ? f.GetString()! : "none";
        ProcessAddressSpace p = inChild && _child is not null && !_child.Exited ? _child : Parent;
        ulong va = p.Mmap(size, VmProt.ReadWrite, VmaKind.Anonymous, shared);
        if (fill == "touched")
        {
            int seed = b.TryGetProperty("seed", out JsonElement s) ? s.GetInt32() : 0;
            var page = new byte[4096];
            for (ulong i = 0; i < size / 4096; i++)
            {
                Array.Fill(page, (byte)((seed + (int)i) & 0xff));
                p.Write(va + (i * 4096), page).ThrowIfError();
            }
        }

        switch (prot)
        {
            case "r":
                p.Mprotect(va, size, VmProt.Read);
                break;
            case "none":
                p.Mprotect(va, size, VmProt.None);
                break;
            case "unmapped":
                p.Munmap(va, size);
                break;
        }

        if (b.TryGetProperty("holes", out JsonElement holes))
        {
            foreach (JsonElement h in holes.EnumerateArray())
            {
                p.Munmap(va + ((ulong)h.GetInt32() * 4096), 4096);
            }
        }

        _buffers[name] = (va, size);
    }

    public StepResult Run(JsonElement step)
    {
        string op = step.GetProperty("op").GetString()!;
        JsonElement args = step.TryGetProperty("args", out JsonElement a) ? a : default;
        ProcessAddressSpace proc = step.TryGetProperty("proc", out JsonElement pr) && pr.GetString() == "child" && _child is not null ? _child : Parent;
        var o = new Dictionary<string, object>();
        string? fdName = step.TryGetProperty("fd", out JsonElement fdEl) ? fdEl.GetString() : null;
        object? file = fdName is not null && _handles.TryGetValue(fdName, out var h) ? h.File : null;
        int r;

        // fdget: an ioctl on a handle this process has closed is -EBADF; a container or group ioctl on another
        // kind of file (e.g. /dev/null) is -ENOTTY. Neither reaches VFIO, so nothing is written back.
        Errno? gate = null;
        if (fdName is not null && op is not ("OPEN" or "CLOSE" or "EDU_DMA") &&
            (!_handles.TryGetValue(fdName, out var open) || !ReferenceEquals(proc.GetFile(open.Fd), open.File)))
        {
            gate = Errno.EBADF;
        }

        int CIoctl(uint req, Span<byte> arg) => gate is Errno g ? -(int)g : file is VfioContainer c ? c.Ioctl(proc, req, arg) : -(int)Errno.ENOTTY;
        int GIoctl(uint req, Span<byte> arg) => gate is Errno g ? -(int)g : file is VfioGroup grp ? grp.Ioctl(proc, req, arg) : -(int)Errno.ENOTTY;

        switch (op)
        {
            case "OPEN":
                {
                    string path = args.GetProperty("path").GetString()!;
                    string handle = step.GetProperty("out").TryGetProperty("handle", out JsonElement he) ? he.GetString()! : "?";
                    if (path == "/dev/vfio/vfio")
                    {
                        var c = _bed.Vfio.OpenContainer(proc, out int fd);
                        _handles[handle] = (c, fd);
                        o["handle"] = handle;
                        return new StepResult(0, null, o);
                    }

                    if (path.StartsWith("/dev/vfio/", StringComparison.Ordinal))
                    {
                        Errno e = _bed.Vfio.OpenGroup(proc, _dev.IommuGroup!.Id, out VfioGroup? g, out int fd);
                        if (e != Errno.None)
                        {
                            return Fail(e, o);
                        }

                        _handles[handle] = (g!, fd);
                        o["handle"] = handle;
                        return new StepResult(0, null, o);
                    }

                    object other = new();
                    int nfd = proc.InstallFile(other);
                    _handles[handle] = (other, nfd);
                    o["handle"] = handle;
                    return new StepResult(0, null, o);
                }

            case "CLOSE":
                return Result(-(int)proc.Close(_handles[fdName!].Fd), o);
            case "GET_API_VERSION":
                r = CIoctl(VfioUapi.VFIO_GET_API_VERSION, Value(0));
                return Result(r, o);
            case "CHECK_EXTENSION":
                r = CIoctl(VfioUapi.VFIO_CHECK_EXTENSION, Value(args.GetProperty("ext").GetInt64()));
                return Result(r, o);
            case "SET_IOMMU":
                r = CIoctl(VfioUapi.VFIO_SET_IOMMU, Value(args.GetProperty("type").GetInt64()));
                return Result(r, o);
            case "RAW_IOCTL":
                {
                    uint req = (uint)Hex(args.GetProperty("request"));
                    var buf = new byte[64];
                    BinaryPrimitives.WriteUInt32LittleEndian(buf, 64);
                    r = file is VfioGroup ? GIoctl(req, buf) : file is VfioContainer || gate is not null ? CIoctl(req, buf) : file is VfioDeviceFile ? throw new NotSupportedException("RAW_IOCTL on a device fd is not modelled") : -(int)Errno.ENOTTY;
                    return Result(r, o);
                }

            case "GROUP_GET_STATUS":
                {
                    var buf = new byte[8];
                    BinaryPrimitives.WriteUInt32LittleEndian(buf, (uint)args.GetProperty("argsz").GetInt32());
                    BinaryPrimitives.WriteUInt32LittleEndian(buf.AsSpan(4), 0xa5a5a5a5);
                    r = GIoctl(VfioUapi.VFIO_GROUP_GET_STATUS, buf);
                    o["argsz"] = (long)BinaryPrimitives.ReadUInt32LittleEndian(buf);
                    o["flags"] = (ulong)BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(4));
                    return Result(r, o);
                }

            case "GROUP_SET_CONTAINER":
                {
                    int cfd = args.TryGetProperty("container", out JsonElement ch) ? _handles[ch.GetString()!].Fd : args.GetProperty("container_fd").GetInt32();
                    if (ch.ValueKind == JsonValueKind.Undefined && cfd is >= 0 and <= 2)
                    {
                        // The recorder's stdin/stdout/stderr are open non-VFIO files (-EINVAL, not -EBADF); the
                        // process model starts its fd table at 3, so stand in one such file for them.
                        cfd = StdStream(proc);
                    }

                    var buf = new byte[4];
                    BinaryPrimitives.WriteInt32LittleEndian(buf, cfd);
                    r = GIoctl(VfioUapi.VFIO_GROUP_SET_CONTAINER, buf);
                    return Result(r, o);
                }

            case "GROUP_UNSET_CONTAINER":
                r = GIoctl(VfioUapi.VFIO_GROUP_UNSET_CONTAINER, Span<byte>.Empty);
                return Result(r, o);
            case "GROUP_GET_DEVICE_FD":
                {
                    string name = args.GetProperty("name").GetString()!.Replace("$BDF", _dev.Name, StringComparison.Ordinal);
                    byte[] buf = [.. Encoding.UTF8.GetBytes(name), 0];
                    r = GIoctl(VfioUapi.VFIO_GROUP_GET_DEVICE_FD, buf);
                    if (r >= 0)
                    {
                        string handle = step.GetProperty("out").TryGetProperty("handle", out JsonElement he) ? he.GetString()! : "D";
                        _handles[handle] = (proc.GetFile(r)!, r);
                        o["handle"] = handle;
                        r = 0;
                    }

                    return Result(r, o);
                }

            case "GET_INFO":
                {
                    var buf = new byte[1024];
                    buf.AsSpan().Fill(0xa5);
                    uint argsz = (uint)args.GetProperty("argsz").GetInt64();
                    BinaryPrimitives.WriteUInt32LittleEndian(buf, argsz);
                    r = CIoctl(VfioUapi.VFIO_IOMMU_GET_INFO, buf);
                    o["argsz"] = (long)BinaryPrimitives.ReadUInt32LittleEndian(buf);
                    o["flags"] = (ulong)BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(4));
                    o["iova_pgsizes"] = BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(8));
                    o["cap_offset"] = (ulong)BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(16));
                    o["raw"] = Convert.ToHexStringLower(buf, 0, (int)Math.Min(argsz, 256u));
                    return Result(r, o);
                }

            case "MAP_DMA":
                {
                    var buf = new byte[32];
                    BinaryPrimitives.WriteUInt32LittleEndian(buf, (uint)args.GetProperty("argsz").GetInt64());
                    BinaryPrimitives.WriteUInt32LittleEndian(buf.AsSpan(4), (uint)Hex(args.GetProperty("flags")));
                    BinaryPrimitives.WriteUInt64LittleEndian(buf.AsSpan(8), Addr(args.GetProperty("vaddr")));
                    BinaryPrimitives.WriteUInt64LittleEndian(buf.AsSpan(16), Hex(args.GetProperty("iova")));
                    BinaryPrimitives.WriteUInt64LittleEndian(buf.AsSpan(24), Hex(args.GetProperty("size")));
                    r = CIoctl(VfioUapi.VFIO_IOMMU_MAP_DMA, buf);
                    return Result(r, o);
                }

            case "UNMAP_DMA":
            case "DIRTY_PAGES":
                {
                    bool unmap = op == "UNMAP_DMA";
                    var buf = new byte[48];
                    BinaryPrimitives.WriteUInt32LittleEndian(buf, (uint)args.GetProperty("argsz").GetInt64());
                    BinaryPrimitives.WriteUInt32LittleEndian(buf.AsSpan(4), (uint)Hex(args.GetProperty("flags")));
                    int off = unmap ? 8 : 8;
                    if (args.TryGetProperty("iova", out JsonElement iova))
                    {
                        BinaryPrimitives.WriteUInt64LittleEndian(buf.AsSpan(off), Hex(iova));
                        BinaryPrimitives.WriteUInt64LittleEndian(buf.AsSpan(off + 8), Hex(args.GetProperty("size")));
                    }

                    (ulong va, ulong size, ulong real, byte prefill) bm = default;
                    if (args.TryGetProperty("bitmap", out JsonElement b))
                    {
                        // The recorder's buffer is the declared size, or smaller where the step's output says
                        // so (bytes_shown, e.g. a 256 MiB declared size over an 8-byte buffer); 64 guard bytes follow.
                        ulong size = Hex(b.GetProperty("size"));
                        ulong real = step.TryGetProperty("out", out JsonElement recOut) && recOut.TryGetProperty("bytes_shown", out JsonElement bs) ? Math.Min((ulong)bs.GetInt64(), size) : size;
                        byte prefill = (byte)Hex(b.GetProperty("prefill"));
                        ulong va = 0;
                        if (b.GetProperty("data").GetString() != "NULL")
                        {
                            va = proc.Mmap(real + 64);
                            var fill = new byte[real + 64];
                            Array.Fill(fill, prefill);
                            proc.Write(va, fill).ThrowIfError();
                        }

                        bm = (va, size, real, prefill);
                        BinaryPrimitives.WriteUInt64LittleEndian(buf.AsSpan(24), Hex(b.GetProperty("pgsize")));
                        BinaryPrimitives.WriteUInt64LittleEndian(buf.AsSpan(32), size);
                        BinaryPrimitives.WriteUInt64LittleEndian(buf.AsSpan(40), va);
                    }

                    uint req = unmap ? VfioUapi.VFIO_IOMMU_UNMAP_DMA : VfioUapi.VFIO_IOMMU_DIRTY_PAGES;
                    r = CIoctl(req, buf);
                    if (unmap)
                    {
                        o["argsz"] = (long)BinaryPrimitives.ReadUInt32LittleEndian(buf);
                        o["flags"] = (ulong)BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(4));
                        o["iova"] = BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(8));
                        o["size"] = BinaryPrimitives.ReadUInt64LittleEndian(buf.AsSpan(16));
                    }

                    if (bm.va != 0)
                    {
                        var data = new byte[bm.real + 64];
                        proc.Read(bm.va, data).ThrowIfError();
                        int shown = (int)Math.Min(bm.real, 256);
                        o["bitmap_hex"] = Convert.ToHexStringLower(data, 0, shown);
                        o["bitmap_set_bits"] = SetBits(data.AsSpan(0, (int)bm.real));
                        bool guard = true;
                        for (ulong i = bm.real; i < bm.real + 64; i++)
                        {
                            guard &= data[i] == bm.prefill;
                        }

                        o["guard_untouched"] = guard;
                    }

                    return Result(r, o);
                }

            case "READ_VMLCK":
                o["locked_vm_kb"] = proc.LockedVmKb;
                return new StepResult(0, null, o);
            case "SETRLIMIT_MEMLOCK":
                proc.RlimitMemlock = Hex(args.GetProperty("soft_bytes"));
                return new StepResult(0, null, o);
            case "SET_CAP_IPC_LOCK":
                proc.CapIpcLock = args.GetProperty("effective").GetBoolean();
                return new StepResult(0, null, o);
            case "SET_MODULE_PARAM":
                _bed.Vfio.Options.DmaEntryLimit = (uint)args.GetProperty("value").GetInt64();
                return new StepResult(0, null, o);
            case "MLOCK":
                return Result(-(int)proc.Mlock(Addr(args.GetProperty("addr")), Hex(args.GetProperty("len"))), o);
            case "MUNMAP":
                {
                    (ulong va, ulong size) = _buffers[args.GetProperty("buf").GetString()!];
                    proc.Munmap(va, size);
                    return new StepResult(0, null, o);
                }

            case "FORK":
                _child = Parent.Fork("child");
                return new StepResult(0, null, o);
            case "EXIT":
                _child?.Exit();
                return new StepResult(0, null, o);
            case "EDU_DMA":
                {
                    ulong iova = Hex(args.GetProperty("iova"));
                    int len = (int)Hex(args.GetProperty("len"));
                    if (args.GetProperty("dir").GetString() == "device_reads_iova")
                    {
                        // QEMU 7.2's edu device: a read the IOMMU faults fills its buffer with zeros (the
                        // unassigned-memory read after the VT-d fault); the device model itself moves no data.
                        var tmp = new byte[len];
                        if (!_dev.DmaRead(null, iova, tmp).IsOk)
                        {
                            Array.Clear(tmp);
                        }

                        tmp.CopyTo(_edu, 0);
                    }
                    else
                    {
                        _ = _dev.DmaWrite(null, iova, _edu.AsSpan(0, len));
                    }

                    o["completed"] = true; // the edu device always completes; a fault just moves no data
                    return new StepResult(0, null, o);
                }

            case "READ_BUF":
                {
                    (ulong va, _) = _buffers[args.GetProperty("buf").GetString()!];
                    int pages = args.GetProperty("pages").GetInt32();
                    var list = new List<string>();
                    var page = new byte[4096];
                    for (int i = 0; i < pages; i++)
                    {
                        proc.Read(va + ((ulong)i * 4096), page).ThrowIfError();
                        bool uniform = Array.TrueForAll(page, x => x == page[0]);
                        list.Add(uniform ? $"{page[0]:x2}" : $"{page[0]:x2}..{page[4095]:x2}");
                    }

                    o["page_bytes"] = list;
                    return new StepResult(0, null, o);
                }

            default:
                throw new NotSupportedException($"trace op {op} is not supported by the replayer");
        }
    }

    public void Dispose() => _bed.Dispose();

    private int StdStream(ProcessAddressSpace p)
    {
        if (!_stdStreams.TryGetValue(p, out int fd))
        {
            fd = p.InstallFile(new object());
            _stdStreams[p] = fd;
        }

        return fd;
    }

    private static StepResult Result(int r, Dictionary<string, object> o) =>
        r < 0 ? new StepResult(-1, ((Errno)(-r)).ToString(), o) : new StepResult(r, null, o);

    private static StepResult Fail(Errno e, Dictionary<string, object> o) => new(-1, e.ToString(), o);

    private static byte[] Value(long v)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(b, v);
        return b;
    }

    private ulong Addr(JsonElement a)
    {
        if (a.TryGetProperty("abs", out JsonElement abs))
        {
            return Hex(abs);
        }

        return _buffers[a.GetProperty("buf").GetString()!].Va + Hex(a.GetProperty("off"));
    }

    public static ulong Hex(JsonElement e) => e.ValueKind == JsonValueKind.Number
        ? e.GetUInt64()
        : ulong.Parse(e.GetString()!.AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture);

    private static List<List<long>> SetBits(ReadOnlySpan<byte> data)
    {
        var runs = new List<List<long>>();
        long start = -1;
        long n = data.Length * 8L;
        for (long i = 0; i <= n; i++)
        {
            bool set = i < n && (data[(int)(i / 8)] & (1 << (int)(i % 8))) != 0;
            if (set && start < 0)
            {
                start = i;
            }
            else if (!set && start >= 0)
            {
                runs.Add([start, i - start]);
                start = -1;
            }
        }

        return runs;
    }
}
