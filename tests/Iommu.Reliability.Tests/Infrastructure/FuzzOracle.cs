using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Text;
using Vfio.Type1;
using Vfio.Type1.Uapi;

namespace Iommu.Reliability.Tests.Infrastructure;

/// <summary>What an ioctl may return: one exact value, or a set of errnos (plus success when <see cref="SuccessOk"/>).</summary>
internal sealed record FuzzExpectation(int? Exact, Errno[] Allowed, bool SuccessOk, string Rule)
{
    public static FuzzExpectation Is(int value, string rule) => new(value, [], false, rule);

    public static FuzzExpectation Fail(Errno e, string rule) => new(-(int)e, [], false, rule);

    public static FuzzExpectation OneOf(string rule, bool successOk, params Errno[] errnos) => new(null, errnos, successOk, rule);

    public bool Accepts(int r) => Exact is int x ? r == x : r >= 0 ? SuccessOk : Array.IndexOf(Allowed, (Errno)(-r)) >= 0;

    public override string ToString() => Exact is int x
        ? string.Create(CultureInfo.InvariantCulture, $"exactly {x} ({Rule})")
        : $"{(SuccessOk ? "success or " : "")}one of [{string.Join(", ", Allowed)}] ({Rule})";
}

/// <summary>
/// The spec (§4.2, §4.6–§4.10 of kernel-api.md) restated independently of the implementation: for every
/// request and argument it predicts the exact errno of the state-independent and snapshot-decidable checks, in
/// the kernel's order, and otherwise the set of errnos the request can return. It also checks what a
/// successful call may write back into the argument.
/// </summary>
internal static class FuzzOracle
{
    private const ulong Page = FuzzBed.PageSize;

    public static FuzzExpectation ContainerExpect(FuzzBed bed, FuzzState s, uint request, ReadOnlySpan<byte> arg)
    {
        VfioIommuType1? b = s.Backend;
        switch (request)
        {
            case VfioUapi.VFIO_GET_API_VERSION:
                return FuzzExpectation.Is(0, "API version 0");
            case VfioUapi.VFIO_CHECK_EXTENSION:
                {
                    long ext = ValueArg(arg);
                    bool claimed = ext is 1 or 3 or 6 or 9 or 10;
                    return b is not null && ext == 4
                        ? FuzzExpectation.OneOf("DMA_CC with a backend is 0 or 1", true)
                        : FuzzExpectation.Is(claimed ? 1 : 0, "type1 extension table");
                }

            case VfioUapi.VFIO_SET_IOMMU:
                {
                    long type = ValueArg(arg);
                    if (s.ContainerGroups == 0 || b is not null)
                    {
                        return FuzzExpectation.Fail(Errno.EINVAL, "SET_IOMMU without groups or with a backend");
                    }

                    return type switch
                    {
                        1 or 3 => FuzzExpectation.Is(0, "SET_IOMMU TYPE1/TYPE1v2"),
                        6 => FuzzExpectation.Fail(Errno.EINVAL, "NESTING attach fails without nested translation"),
                        9 or 10 => FuzzExpectation.Fail(Errno.EINVAL, "type1 open rejects UNMAP_ALL/UPDATE_VADDR"),
                        _ => FuzzExpectation.Fail(Errno.ENODEV, "no backend claims the type"),
                    };
                }
        }

        if (b is null)
        {
            return FuzzExpectation.Fail(Errno.EINVAL, "container ioctl before SET_IOMMU");
        }

        return request switch
        {
            VfioUapi.VFIO_IOMMU_MAP_DMA => Map(b, s, arg),
            VfioUapi.VFIO_IOMMU_UNMAP_DMA => Unmap(b, s, arg),
            VfioUapi.VFIO_IOMMU_GET_INFO => Info(b, arg),
            VfioUapi.VFIO_IOMMU_DIRTY_PAGES => Dirty(b, s, arg),
            _ => FuzzExpectation.Fail(Errno.ENOTTY, "unknown request with a backend"),
        };
    }

    public static FuzzExpectation GroupExpect(FuzzBed bed, FuzzState s, int deviceFdsOpen, uint request, ReadOnlySpan<byte> arg)
    {
        switch (request)
        {
            case VfioUapi.VFIO_GROUP_GET_STATUS:
                // copy_from_user(&status, arg, minsz = 8) comes first.
                if (arg.Length < 8)
                {
                    return FuzzExpectation.Fail(Errno.EFAULT, "GET_STATUS copy fault");
                }

                return BinaryPrimitives.ReadUInt32LittleEndian(arg) < 8
                    ? FuzzExpectation.Fail(Errno.EINVAL, "GET_STATUS argsz < 8")
                    : FuzzExpectation.Is(0, "GET_STATUS");
            case VfioUapi.VFIO_GROUP_SET_CONTAINER:
                {
                    if (arg.Length < 4)
                    {
                        return FuzzExpectation.Fail(Errno.EFAULT, "SET_CONTAINER copy fault");
                    }

                    int fd = BinaryPrimitives.ReadInt32LittleEndian(arg);
                    if (fd < 0)
                    {
                        return FuzzExpectation.Fail(Errno.EINVAL, "SET_CONTAINER fd < 0");
                    }

                    if (s.GroupAContainer is not null)
                    {
                        return FuzzExpectation.Fail(Errno.EINVAL, "SET_CONTAINER group already in a container");
                    }

                    object? f = bed.Proc.GetFile(fd);
                    return f is null ? FuzzExpectation.Fail(Errno.EBADF, "SET_CONTAINER fd not open")
                        : f is not VfioContainer ? FuzzExpectation.Fail(Errno.EINVAL, "SET_CONTAINER not a container")
                        : FuzzExpectation.Is(0, "SET_CONTAINER");
                }

            case VfioUapi.VFIO_GROUP_UNSET_CONTAINER:
                return s.GroupAContainer is null ? FuzzExpectation.Fail(Errno.EINVAL, "UNSET_CONTAINER not set")
                    : deviceFdsOpen > 0 ? FuzzExpectation.Fail(Errno.EBUSY, "UNSET_CONTAINER with device fds")
                    : FuzzExpectation.Is(0, "UNSET_CONTAINER");
            case VfioUapi.VFIO_GROUP_GET_DEVICE_FD:
                {
                    if (s.GroupAContainer is not VfioContainer c || c.Backend is null)
                    {
                        return FuzzExpectation.Fail(Errno.EINVAL, "GET_DEVICE_FD without a container backend");
                    }

                    int nul = arg.IndexOf((byte)0);
                    ReadOnlySpan<byte> name = nul < 0 ? arg : arg[..nul];
                    return name.SequenceEqual(Encoding.ASCII.GetBytes(FuzzBed.DevAName))
                        ? FuzzExpectation.OneOf("GET_DEVICE_FD returns an fd", true)
                        : FuzzExpectation.Fail(Errno.ENODEV, "GET_DEVICE_FD unknown name");
                }

            default:
                return FuzzExpectation.Fail(Errno.ENOTTY, "unknown group ioctl");
        }
    }

    private static FuzzExpectation Map(VfioIommuType1 b, FuzzState s, ReadOnlySpan<byte> arg)
    {
        if (arg.Length < 32)
        {
            return FuzzExpectation.Fail(Errno.EFAULT, "MAP copy fault");
        }

        uint argsz = BinaryPrimitives.ReadUInt32LittleEndian(arg);
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(arg[4..]);
        ulong vaddr = BinaryPrimitives.ReadUInt64LittleEndian(arg[8..]);
        ulong iova = BinaryPrimitives.ReadUInt64LittleEndian(arg[16..]);
        ulong size = BinaryPrimitives.ReadUInt64LittleEndian(arg[24..]);
        if (argsz < 32 || (flags & ~7u) != 0)
        {
            return FuzzExpectation.Fail(Errno.EINVAL, "MAP argsz < 32 or unknown flags");
        }

        bool vaddrFlag = (flags & 4) != 0;
        if (vaddrFlag == ((flags & 3) != 0))
        {
            return FuzzExpectation.Fail(Errno.EINVAL, "MAP needs exactly one of READ|WRITE or VADDR");
        }

        ulong pg = s.PgsizeBitmap & (~s.PgsizeBitmap + 1);
        if (size == 0 || ((size | iova | vaddr) & (pg - 1)) != 0)
        {
            return FuzzExpectation.Fail(Errno.EINVAL, "MAP size 0 or unaligned");
        }

        if (iova + size - 1 < iova || vaddr + size - 1 < vaddr)
        {
            return FuzzExpectation.Fail(Errno.EINVAL, "MAP range wraps");
        }

        FuzzMapping? hit = FindOverlap(s.Mappings, iova, iova + size - 1);
        if (vaddrFlag)
        {
            return hit is not FuzzMapping m ? FuzzExpectation.Fail(Errno.ENOENT, "MAP(VADDR) no mapping")
                : !m.VaddrInvalid || m.Iova != iova || m.Size != size ? FuzzExpectation.Fail(Errno.EINVAL, "MAP(VADDR) not invalidated or differs")
                : FuzzExpectation.Is(0, "MAP(VADDR) restores the vaddr");
        }

        if (hit is not null)
        {
            return FuzzExpectation.Fail(Errno.EEXIST, "MAP overlaps a mapping");
        }

        if (s.DmaAvail == 0)
        {
            return FuzzExpectation.Fail(Errno.ENOSPC, "MAP with dma_avail 0");
        }

        IReadOnlyList<VfioIovaRange> list = b.IovaList;
        if (list.Count > 0 && !list.Any(r => iova >= r.Start && iova + size - 1 <= r.End))
        {
            return FuzzExpectation.Fail(Errno.EINVAL, "MAP outside the IOVA list");
        }

        return FuzzExpectation.OneOf("MAP pin/map outcome", true, Errno.EFAULT, Errno.ENOMEM);
    }

    private static FuzzExpectation Unmap(VfioIommuType1 b, FuzzState s, ReadOnlySpan<byte> arg)
    {
        if (arg.Length < 24)
        {
            return FuzzExpectation.Fail(Errno.EFAULT, "UNMAP copy fault");
        }

        uint argsz = BinaryPrimitives.ReadUInt32LittleEndian(arg);
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(arg[4..]);
        ulong iova = BinaryPrimitives.ReadUInt64LittleEndian(arg[8..]);
        ulong size = BinaryPrimitives.ReadUInt64LittleEndian(arg[16..]);
        if (argsz < 24 || (flags & ~7u) != 0)
        {
            return FuzzExpectation.Fail(Errno.EINVAL, "UNMAP argsz < 24 or unknown flags");
        }

        bool dirty = (flags & 1) != 0, all = (flags & 2) != 0, vaddr = (flags & 4) != 0;
        if (dirty && (all || vaddr))
        {
            return FuzzExpectation.Fail(Errno.EINVAL, "UNMAP GET_DIRTY_BITMAP with ALL/VADDR");
        }

        ulong pgsize = 0;
        if (dirty)
        {
            if (argsz < 48)
            {
                return FuzzExpectation.Fail(Errno.EINVAL, "UNMAP dirty argsz < 48");
            }

            if (arg.Length < 48)
            {
                return FuzzExpectation.Fail(Errno.EFAULT, "UNMAP bitmap copy fault");
            }

            pgsize = BinaryPrimitives.ReadUInt64LittleEndian(arg[24..]);
            ulong bmSize = BinaryPrimitives.ReadUInt64LittleEndian(arg[32..]);
            ulong data = BinaryPrimitives.ReadUInt64LittleEndian(arg[40..]);
            if (!AccessOk(data, bmSize))
            {
                return FuzzExpectation.Fail(Errno.EINVAL, "UNMAP bitmap not a user range");
            }

            if (!BitmapSizeOk(size >> (pgsize == 0 ? 0 : BitOperations.TrailingZeroCount(pgsize)), bmSize))
            {
                return FuzzExpectation.Fail(Errno.EINVAL, "UNMAP bitmap size");
            }
        }

        ulong pg = s.PgsizeBitmap & (~s.PgsizeBitmap + 1);
        ulong last;
        if (all)
        {
            if (iova != 0 || size != 0)
            {
                return FuzzExpectation.Fail(Errno.EINVAL, "UNMAP(ALL) iova/size not 0");
            }

            last = ulong.MaxValue;
        }
        else
        {
            if (size == 0 || ((iova | size) & (pg - 1)) != 0 || iova + size - 1 < iova)
            {
                return FuzzExpectation.Fail(Errno.EINVAL, "UNMAP size 0, unaligned or wraps");
            }

            last = iova + size - 1;
        }

        if (dirty && (!s.DirtyTracking || pgsize != pg))
        {
            return FuzzExpectation.Fail(Errno.EINVAL, "UNMAP dirty while not tracking or pgsize mismatch");
        }

        if (b.V2 && !all && Bisects(s.Mappings, iova, last))
        {
            return FuzzExpectation.Fail(Errno.EINVAL, "UNMAP v2 bisection");
        }

        // A range ending exactly at 2^64 passes the wrap check, but 5.15's vfio_find_dma_first_node then tests
        // dma->iova >= start + size with start + size == 0 and finds nothing: success, nothing removed or invalidated.
        if (!all && iova + size == 0)
        {
            return FuzzExpectation.Is(0, "UNMAP of a range ending at 2^64 (vfio_find_dma_first_node finds nothing)");
        }

        if (vaddr)
        {
            bool first = true;
            foreach (FuzzMapping m in s.Mappings.OrderBy(m => m.Iova))
            {
                if (m.Iova + m.Size - 1 < (all ? 0 : iova) || m.Iova > last)
                {
                    continue;
                }

                // The first node's search compares start < dma->iova + dma->size, which is 0 for a mapping ending at
                // 2^64: that mapping is never the first one found, so alone in the range it is not reached.
                if (first && m.Iova + m.Size == 0)
                {
                    break;
                }

                first = false;

                if (!b.V2 && m.Iova < iova)
                {
                    break;
                }

                if (m.VaddrInvalid)
                {
                    return FuzzExpectation.Fail(Errno.EINVAL, "UNMAP(VADDR) of an invalidated mapping");
                }
            }

            return FuzzExpectation.Is(0, "UNMAP(VADDR)");
        }

        return dirty ? FuzzExpectation.OneOf("UNMAP dirty copy", true, Errno.EFAULT) : FuzzExpectation.Is(0, "UNMAP");
    }

    private static FuzzExpectation Info(VfioIommuType1 b, ReadOnlySpan<byte> arg)
    {
        if (arg.Length < 16)
        {
            return FuzzExpectation.Fail(Errno.EFAULT, "GET_INFO copy fault");
        }

        uint argsz = BinaryPrimitives.ReadUInt32LittleEndian(arg);
        if (argsz < 16)
        {
            return FuzzExpectation.Fail(Errno.EINVAL, "GET_INFO argsz < 16");
        }

        // The caps are copied only when argsz covers them (then the user buffer must hold them); the header
        // copy_to_user writes 16 bytes, or 20 when argsz >= 20.
        int nIova = b.IovaList.Count;
        int required = 24 + 32 + 12 + (nIova > 0 ? 16 + (16 * nIova) : 0);
        if (argsz >= required)
        {
            return arg.Length < required ? FuzzExpectation.Fail(Errno.EFAULT, "GET_INFO caps copy fault") : FuzzExpectation.Is(0, "GET_INFO with caps");
        }

        return arg.Length < (argsz >= 20 ? 20 : 16) ? FuzzExpectation.Fail(Errno.EFAULT, "GET_INFO header copy fault") : FuzzExpectation.Is(0, "GET_INFO without caps");
    }

    private static FuzzExpectation Dirty(VfioIommuType1 b, FuzzState s, ReadOnlySpan<byte> arg)
    {
        if (!b.V2)
        {
            return FuzzExpectation.Fail(Errno.EACCES, "DIRTY_PAGES on v1");
        }

        if (arg.Length < 8)
        {
            return FuzzExpectation.Fail(Errno.EFAULT, "DIRTY_PAGES copy fault");
        }

        uint argsz = BinaryPrimitives.ReadUInt32LittleEndian(arg);
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(arg[4..]);
        if (argsz < 8 || (flags & ~7u) != 0 || BitOperations.PopCount(flags) != 1)
        {
            return FuzzExpectation.Fail(Errno.EINVAL, "DIRTY_PAGES argsz < 8, unknown flags or not one flag");
        }

        if (flags != 4)
        {
            return FuzzExpectation.Is(0, "DIRTY_PAGES START/STOP");
        }

        if (argsz < 48)
        {
            return FuzzExpectation.Fail(Errno.EINVAL, "GET_BITMAP argsz < 48");
        }

        if (arg.Length < 48)
        {
            return FuzzExpectation.Fail(Errno.EFAULT, "GET_BITMAP copy fault");
        }

        ulong iova = BinaryPrimitives.ReadUInt64LittleEndian(arg[8..]);
        ulong size = BinaryPrimitives.ReadUInt64LittleEndian(arg[16..]);
        ulong pgsize = BinaryPrimitives.ReadUInt64LittleEndian(arg[24..]);
        ulong bmSize = BinaryPrimitives.ReadUInt64LittleEndian(arg[32..]);
        ulong data = BinaryPrimitives.ReadUInt64LittleEndian(arg[40..]);
        ulong pg = s.PgsizeBitmap & (~s.PgsizeBitmap + 1);
        if (iova + size < iova || !AccessOk(data, bmSize)
            || !BitmapSizeOk(size >> (pgsize == 0 ? 0 : BitOperations.TrailingZeroCount(pgsize)), bmSize)
            || pgsize != pg || (iova & (pg - 1)) != 0 || size == 0 || (size & (pg - 1)) != 0 || !s.DirtyTracking
            || Bisects(s.Mappings, iova, iova + size - 1))
        {
            return FuzzExpectation.Fail(Errno.EINVAL, "GET_BITMAP wrap/access/size/pgsize/alignment/tracking/bisection");
        }

        return FuzzExpectation.OneOf("GET_BITMAP copy", true, Errno.EFAULT);
    }

    /// <summary>What a call may have written into its argument; null when the write-back is legal.</summary>
    public static string? CheckWriteBack(FuzzState before, FuzzState after, bool group, uint request, ReadOnlySpan<byte> old, ReadOnlySpan<byte> now, int r)
    {
        if (r < 0 || (!group && request != VfioUapi.VFIO_IOMMU_GET_INFO && request != VfioUapi.VFIO_IOMMU_UNMAP_DMA)
            || (group && request != VfioUapi.VFIO_GROUP_GET_STATUS))
        {
            return old.SequenceEqual(now) ? null : "the argument was written although " + (r < 0 ? "the call failed" : "this request writes nothing back");
        }

        if (group)
        {
            uint flags = (after.GroupAContainer is null ? 0u : 2u) | 1u;
            return old[..4].SequenceEqual(now[..4]) && old[8..].SequenceEqual(now[8..]) && BinaryPrimitives.ReadUInt32LittleEndian(now[4..]) == flags
                ? null : string.Create(CultureInfo.InvariantCulture, $"GET_STATUS must write only flags = 0x{flags:x}");
        }

        if (request == VfioUapi.VFIO_IOMMU_UNMAP_DMA)
        {
            ulong unmapped = BinaryPrimitives.ReadUInt64LittleEndian(now[16..]);
            uint flags = BinaryPrimitives.ReadUInt32LittleEndian(old[4..]);
            ulong expect = (flags & 4) != 0
                ? SumInvalid(after.Mappings) - SumInvalid(before.Mappings)
                : Sum(before.Mappings) - Sum(after.Mappings);
            return old[..16].SequenceEqual(now[..16]) && old[24..].SequenceEqual(now[24..]) && unmapped == expect
                ? null : string.Create(CultureInfo.InvariantCulture, $"UNMAP must write only size = bytes removed/invalidated (0x{expect:x}), wrote 0x{unmapped:x}");
        }

        // GET_INFO
        uint argsz = BinaryPrimitives.ReadUInt32LittleEndian(old);
        int nIova = before.Backend!.IovaList.Count;
        uint required = (uint)(24 + 32 + 12 + (nIova > 0 ? 16 + (16 * nIova) : 0));
        uint outArgsz = BinaryPrimitives.ReadUInt32LittleEndian(now);
        uint outFlags = BinaryPrimitives.ReadUInt32LittleEndian(now[4..]);
        ulong pgsizes = BinaryPrimitives.ReadUInt64LittleEndian(now[8..]);
        if (outArgsz != Math.Max(argsz, required) || outFlags != 3 || pgsizes != before.PgsizeBitmap)
        {
            return string.Create(CultureInfo.InvariantCulture, $"GET_INFO header argsz 0x{outArgsz:x} flags 0x{outFlags:x} pgsizes 0x{pgsizes:x}, expected argsz 0x{Math.Max(argsz, required):x} flags 3 pgsizes 0x{before.PgsizeBitmap:x}");
        }

        int written = argsz < 20 ? 16 : 20;
        if (!old[Math.Min(written, old.Length)..Math.Min(24, old.Length)].SequenceEqual(now[Math.Min(written, now.Length)..Math.Min(24, now.Length)]))
        {
            return "GET_INFO wrote cap_offset with argsz < 20, or the padding bytes 20..23";
        }

        bool caps = argsz >= required;
        if (argsz >= 20 && BinaryPrimitives.ReadUInt32LittleEndian(now[16..]) != (caps ? 24u : 0u))
        {
            return "GET_INFO cap_offset must be 24 when the chain fits, else 0";
        }

        if (!caps)
        {
            return old[Math.Min(24, old.Length)..].SequenceEqual(now[Math.Min(24, now.Length)..]) ? null : "GET_INFO wrote capabilities that did not fit";
        }

        // MIGRATION at 24 (next 56), DMA_AVAIL at 56 (avail = dma_avail), then IOVA_RANGE; nothing after.
        if (BinaryPrimitives.ReadUInt16LittleEndian(now[24..]) != 2 || BinaryPrimitives.ReadUInt32LittleEndian(now[28..]) != 56
            || BinaryPrimitives.ReadUInt16LittleEndian(now[56..]) != 3 || BinaryPrimitives.ReadUInt32LittleEndian(now[64..]) != before.DmaAvail)
        {
            return "GET_INFO capability chain (MIGRATION@24 → DMA_AVAIL@56 with dma_avail) is wrong";
        }

        return old[(int)required..].SequenceEqual(now[(int)required..]) ? null : "GET_INFO wrote past the capability chain";
    }

    private static ulong Sum(IReadOnlyList<FuzzMapping> maps) => maps.Aggregate(0UL, (a, m) => a + m.Size);

    private static ulong SumInvalid(IReadOnlyList<FuzzMapping> maps) => maps.Aggregate(0UL, (a, m) => a + (m.VaddrInvalid ? m.Size : 0));

    private static FuzzMapping? FindOverlap(IReadOnlyList<FuzzMapping> maps, ulong first, ulong last)
    {
        foreach (FuzzMapping m in maps)
        {
            if (m.Iova <= last && m.Iova + m.Size - 1 >= first)
            {
                return m;
            }
        }

        return null;
    }

    // v2 rule: a mapping containing iova must start there; one containing last must end there.
    private static bool Bisects(IReadOnlyList<FuzzMapping> maps, ulong iova, ulong last)
    {
        foreach (FuzzMapping m in maps)
        {
            ulong end = m.Iova + m.Size - 1;
            if ((m.Iova <= iova && iova <= end && m.Iova != iova) || (m.Iova <= last && last <= end && end != last))
            {
                return true;
            }
        }

        return false;
    }

    private static bool AccessOk(ulong addr, ulong size) => size <= 0x7FFF_FFFF_F000UL && addr <= 0x7FFF_FFFF_F000UL - size;

    private static bool BitmapSizeOk(ulong npages, ulong bytes) =>
        npages != 0 && bytes != 0 && bytes <= VfioUapi.DirtyBitmapSizeMax && bytes >= ((npages + 63) / 64) * 8;

    private static long ValueArg(ReadOnlySpan<byte> arg) => arg.Length switch
    {
        >= 8 => BinaryPrimitives.ReadInt64LittleEndian(arg),
        >= 4 => BinaryPrimitives.ReadInt32LittleEndian(arg),
        _ => 0,
    };
}
