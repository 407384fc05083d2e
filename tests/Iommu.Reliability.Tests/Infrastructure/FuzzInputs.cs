using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Vfio.Type1.Uapi;

namespace Iommu.Reliability.Tests.Infrastructure;

/// <summary>One fuzz input: a request number and the argument bytes.</summary>
internal sealed record FuzzInput(uint Request, byte[] Arg, string Origin)
{
    public string Describe() => string.Create(CultureInfo.InvariantCulture, $"request 0x{Request:x} ({FuzzInputs.RequestName(Request)}), {Arg.Length} byte(s), origin {Origin}:\n{FuzzInputs.HexDump(Arg)}");
}

/// <summary>
/// A deterministic generator of VFIO ioctl inputs: every request number the code knows plus random and
/// neighbouring ones, argument buffers built from a dictionary of interesting values (valid structures
/// over the bed's buffers and existing mappings, argsz/flags/alignment/overflow edges) and then mutated
/// (truncated, extended with trailing bytes, argsz replaced, flag bits flipped, bytes flipped).
/// </summary>
internal sealed class FuzzInputs(Random rng, FuzzBed bed)
{
    public static readonly uint[] ContainerRequests =
    [
        VfioUapi.VFIO_GET_API_VERSION, VfioUapi.VFIO_CHECK_EXTENSION, VfioUapi.VFIO_SET_IOMMU,
        VfioUapi.VFIO_IOMMU_GET_INFO, VfioUapi.VFIO_IOMMU_MAP_DMA, VfioUapi.VFIO_IOMMU_UNMAP_DMA,
        VfioUapi.VFIO_IOMMU_ENABLE, VfioUapi.VFIO_IOMMU_DISABLE, VfioUapi.VFIO_IOMMU_DIRTY_PAGES,
    ];

    /// <summary>The container requests weighted towards the type1 ones with structures.</summary>
    public static readonly uint[] ContainerWeighted =
    [
        .. ContainerRequests, VfioUapi.VFIO_IOMMU_MAP_DMA, VfioUapi.VFIO_IOMMU_MAP_DMA, VfioUapi.VFIO_IOMMU_MAP_DMA,
        VfioUapi.VFIO_IOMMU_UNMAP_DMA, VfioUapi.VFIO_IOMMU_UNMAP_DMA, VfioUapi.VFIO_IOMMU_DIRTY_PAGES, VfioUapi.VFIO_IOMMU_GET_INFO,
    ];

    public static readonly uint[] GroupRequests =
    [
        VfioUapi.VFIO_GROUP_GET_STATUS, VfioUapi.VFIO_GROUP_SET_CONTAINER, VfioUapi.VFIO_GROUP_UNSET_CONTAINER, VfioUapi.VFIO_GROUP_GET_DEVICE_FD,
    ];

    private static readonly ulong[] Sizes =
    [
        0, 1, 0x800, 0xfff, 0x1000, 0x1001, 0x2000, 0x4000, 0x8000, 0x10000, 0x40000, 0x200000, 0x40000000,
        1UL << 39, 1UL << 48, 1UL << 63, ulong.MaxValue, ulong.MaxValue - 0xfff, ulong.MaxValue - 0x1fff, 0x8000_0000_0000_1000,
    ];

    private static readonly ulong[] Iovas =
    [
        0, 1, 0x800, 0x1000, 0x10_0000, 0x10_1000, 0x20_0000, 0xfed0_0000, 0xfee0_0000, 0xfee0_1000, 0xfeef_f000, 0xfef0_0000,
        (1UL << 39) - 0x1000, (1UL << 39) - 0x2000, 1UL << 39, 1UL << 48, 1UL << 63, ulong.MaxValue - 0xfff, ulong.MaxValue, ulong.MaxValue - 0x1fff,
    ];

    private static readonly uint[] Argszs = [0, 1, 4, 7, 8, 15, 16, 19, 20, 23, 24, 25, 31, 32, 33, 40, 47, 48, 49, 64, 116, 0x7fffffff, 0x80000000, uint.MaxValue];

    public static string RequestName(uint r) => r switch
    {
        VfioUapi.VFIO_GET_API_VERSION => "GET_API_VERSION",
        VfioUapi.VFIO_CHECK_EXTENSION => "CHECK_EXTENSION",
        VfioUapi.VFIO_SET_IOMMU => "SET_IOMMU",
        VfioUapi.VFIO_GROUP_GET_STATUS => "GROUP_GET_STATUS",
        VfioUapi.VFIO_GROUP_SET_CONTAINER => "GROUP_SET_CONTAINER",
        VfioUapi.VFIO_GROUP_UNSET_CONTAINER => "GROUP_UNSET_CONTAINER",
        VfioUapi.VFIO_GROUP_GET_DEVICE_FD => "GROUP_GET_DEVICE_FD",
        VfioUapi.VFIO_IOMMU_GET_INFO => "IOMMU_GET_INFO",
        VfioUapi.VFIO_IOMMU_MAP_DMA => "IOMMU_MAP_DMA",
        VfioUapi.VFIO_IOMMU_UNMAP_DMA => "IOMMU_UNMAP_DMA",
        VfioUapi.VFIO_IOMMU_ENABLE => "IOMMU_ENABLE",
        VfioUapi.VFIO_IOMMU_DISABLE => "IOMMU_DISABLE",
        VfioUapi.VFIO_IOMMU_DIRTY_PAGES => "IOMMU_DIRTY_PAGES",
        _ => "other",
    };

    public static string HexDump(ReadOnlySpan<byte> data)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < data.Length; i += 16)
        {
            sb.Append(CultureInfo.InvariantCulture, $"  {i:x4}:");
            for (int j = i; j < Math.Min(i + 16, data.Length); j++)
            {
                sb.Append(CultureInfo.InvariantCulture, $" {data[j]:x2}");
            }

            sb.Append('\n');
        }

        return sb.Length == 0 ? "  (empty)\n" : sb.ToString();
    }

    /// <summary>A request number: mostly known ones, sometimes neighbours, encoded variants or random.</summary>
    public uint Request(uint[] preferred)
    {
        int k = rng.Next(100);
        if (k < 80)
        {
            return preferred[rng.Next(preferred.Length)];
        }

        if (k < 88)
        {
            uint[] all = [.. ContainerRequests, .. GroupRequests];
            return all[rng.Next(all.Length)];
        }

        if (k < 93)
        {
            return (VfioUapi.VfioType << 8) | (uint)rng.Next(256); // ';' with any number
        }

        if (k < 97)
        {
            // The real _IOWR encoding: direction and size bits above a known number.
            return preferred[rng.Next(preferred.Length)] | ((uint)rng.Next(1, 0x4000) << 16);
        }

        return (uint)rng.NextInt64(0, 1L << 32);
    }

    /// <summary>An argument buffer for <paramref name="request"/> (container or group), then mutated.</summary>
    public FuzzInput Build(uint request, IReadOnlyList<FuzzMapping> mappings, IReadOnlyList<int> fds)
    {
        string origin;
        byte[] arg;
        int k = rng.Next(100);
        if (k < 6)
        {
            arg = RandomBytes(rng.Next(0, 72));
            origin = "random";
        }
        else
        {
            (arg, origin) = request switch
            {
                VfioUapi.VFIO_IOMMU_MAP_DMA => (MapDma(mappings), "map"),
                VfioUapi.VFIO_IOMMU_UNMAP_DMA => (UnmapDma(mappings), "unmap"),
                VfioUapi.VFIO_IOMMU_GET_INFO => (GetInfo(), "info"),
                VfioUapi.VFIO_IOMMU_DIRTY_PAGES => (DirtyPages(mappings), "dirty"),
                VfioUapi.VFIO_CHECK_EXTENSION or VfioUapi.VFIO_SET_IOMMU => (ValueArg(), "value"),
                VfioUapi.VFIO_GROUP_GET_STATUS => (Header((uint)Pick(Argszs), (uint)rng.Next(4), 8), "status"),
                VfioUapi.VFIO_GROUP_SET_CONTAINER => (FdArg(fds), "fd"),
                VfioUapi.VFIO_GROUP_GET_DEVICE_FD => (DeviceName(), "name"),
                _ => (RandomBytes(rng.Next(0, 64)), "random"),
            };
        }

        if (rng.Next(100) < 30)
        {
            origin += "+" + Mutate(ref arg);
        }

        return new FuzzInput(request, arg, origin);
    }

    private string Mutate(ref byte[] arg)
    {
        switch (rng.Next(7))
        {
            case 0:
                arg = arg[..rng.Next(0, arg.Length + 1)];
                return "truncated";
            case 1:
                {
                    byte[] longer = new byte[arg.Length + rng.Next(1, 40)];
                    arg.CopyTo(longer, 0);
                    rng.NextBytes(longer.AsSpan(arg.Length));
                    arg = longer;
                    return "trailing";
                }

            case 2:
                if (arg.Length >= 4)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(arg, (uint)Pick(Argszs));
                }

                return "argsz";
            case 3:
                if (arg.Length >= 8)
                {
                    arg[4 + rng.Next(4)] ^= (byte)(1 << rng.Next(8));
                }

                return "flagbit";
            case 4:
                if (arg.Length > 0)
                {
                    arg[rng.Next(arg.Length)] ^= (byte)(1 << rng.Next(8));
                }

                return "bitflip";
            case 5:
                if (arg.Length >= 16)
                {
                    int off = 8 * rng.Next(1, arg.Length / 8);
                    BinaryPrimitives.WriteUInt64LittleEndian(arg.AsSpan(off), Pick(Sizes) + (ulong)rng.Next(-1, 2));
                }

                return "field";
            default:
                if (arg.Length > 0)
                {
                    arg[rng.Next(arg.Length)] = (byte)rng.Next(256);
                }

                return "byte";
        }
    }

    private byte[] MapDma(IReadOnlyList<FuzzMapping> mappings)
    {
        uint flags = rng.Next(12) switch
        {
            < 7 => 3,
            7 => 1,
            8 => 2,
            9 => VfioUapi.VFIO_DMA_MAP_FLAG_VADDR,
            10 => (uint)rng.Next(16),
            _ => 1u << rng.Next(32),
        };
        ulong vaddr = Vaddr();
        ulong iova;
        ulong size;
        if (mappings.Count > 0 && rng.Next(4) == 0)
        {
            // Over an existing mapping: exact (EEXIST, or VADDR update), or partial.
            FuzzMapping m = mappings[rng.Next(mappings.Count)];
            iova = rng.Next(3) == 0 ? m.Iova + (FuzzBed.PageSize * (ulong)rng.Next(0, 4)) : m.Iova;
            size = rng.Next(3) == 0 ? FuzzBed.PageSize * (ulong)rng.Next(1, 8) : m.Size;
        }
        else
        {
            iova = IovaNear();
            size = SizeSmall();
        }

        byte[] b = new byte[32];
        BinaryPrimitives.WriteUInt32LittleEndian(b, 32);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), vaddr);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), iova);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), size);
        return b;
    }

    private byte[] UnmapDma(IReadOnlyList<FuzzMapping> mappings)
    {
        uint flags = rng.Next(12) switch
        {
            < 6 => 0,
            6 => VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL,
            7 => VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR,
            8 => VfioUapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
            9 => (uint)rng.Next(16),
            10 => VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL | VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR,
            _ => 1u << rng.Next(32),
        };
        if (bed.Scenario == FuzzScenario.ContainerV2Full && rng.Next(8) != 0)
        {
            flags &= ~VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL; // keep the container near its slot and memlock limits
        }

        ulong iova, size;
        if ((flags & VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL) != 0 && rng.Next(3) != 0)
        {
            (iova, size) = (0, 0);
        }
        else
        {
            (iova, size) = Range(mappings);
        }

        bool dirty = (flags & VfioUapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) != 0;
        byte[] b = new byte[dirty || rng.Next(8) == 0 ? 48 : 24];
        BinaryPrimitives.WriteUInt32LittleEndian(b, (uint)b.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), iova);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), size);
        if (b.Length == 48)
        {
            WriteBitmap(b.AsSpan(24), size);
        }

        return b;
    }

    private byte[] DirtyPages(IReadOnlyList<FuzzMapping> mappings)
    {
        uint flags = rng.Next(10) switch
        {
            < 2 => VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START,
            2 => VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP,
            < 7 => VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
            7 => 0,
            8 => (uint)rng.Next(16),
            _ => 1u << rng.Next(32),
        };
        if (flags != VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP && rng.Next(2) == 0)
        {
            return Header(8, flags, 8);
        }

        (ulong iova, ulong size) = Range(mappings);
        byte[] b = new byte[48];
        BinaryPrimitives.WriteUInt32LittleEndian(b, 48);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), iova);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), size);
        WriteBitmap(b.AsSpan(24), size);
        return b;
    }

    private byte[] GetInfo()
    {
        uint argsz = rng.Next(3) == 0 ? (uint)rng.Next(0, 160) : (uint)Pick(Argszs);
        int len = rng.Next(4) switch
        {
            0 => (int)Math.Min(argsz, 256u),
            1 => rng.Next(0, 160),
            2 => 116 + rng.Next(0, 16),
            _ => 24,
        };
        byte[] b = RandomBytes(len); // random prefill: bytes the kernel must not write stay as they were
        if (len >= 4)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(b, argsz);
        }

        return b;
    }

    private byte[] ValueArg()
    {
        long v = rng.Next(6) switch
        {
            < 3 => rng.Next(-1, 13),
            3 => rng.NextInt64(),
            4 => (long)(1UL << 32) | (uint)rng.Next(0, 13),
            _ => -rng.NextInt64(),
        };
        int len = rng.Next(5) switch
        {
            0 => 0,
            1 => 4,
            2 => rng.Next(0, 12),
            _ => 8,
        };
        byte[] b = new byte[len];
        Span<byte> full = stackalloc byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(full, v);
        full[..Math.Min(len, 8)].CopyTo(b);
        return b;
    }

    private byte[] FdArg(IReadOnlyList<int> fds)
    {
        int fd = rng.Next(8) switch
        {
            < 3 => bed.Container.Fd,
            3 => bed.OtherContainer.Fd,
            4 => fds.Count > 0 ? fds[rng.Next(fds.Count)] : bed.DevNullFd,
            5 => rng.Next(2) == 0 ? bed.ClosedFd : bed.DevNullFd,
            6 => rng.Next(-3, 64),
            _ => rng.Next(2) == 0 ? int.MinValue : rng.Next(),
        };
        byte[] b = new byte[rng.Next(6) == 0 ? rng.Next(0, 9) : 4];
        Span<byte> full = stackalloc byte[8];
        BinaryPrimitives.WriteInt32LittleEndian(full, fd);
        full[..Math.Min(b.Length, 4)].CopyTo(b);
        return b;
    }

    private byte[] DeviceName()
    {
        string name = rng.Next(8) switch
        {
            < 3 => FuzzBed.DevAName,
            3 => FuzzBed.DevBName,
            4 => FuzzBed.DevForeignName,
            5 => "",
            6 => FuzzBed.DevAName.ToUpperInvariant() + (rng.Next(2) == 0 ? " " : "x"),
            _ => new string('a', rng.Next(0, 300)),
        };
        byte[] text = Encoding.UTF8.GetBytes(name);
        int tail = rng.Next(4) switch
        {
            0 => 0, // no NUL at all: the whole buffer is the name
            1 => rng.Next(2, 8), // NUL then garbage
            _ => 1,
        };
        byte[] b = new byte[text.Length + tail];
        text.CopyTo(b, 0);
        if (tail > 1)
        {
            rng.NextBytes(b.AsSpan(text.Length + 1));
        }

        if (b.Length > 0 && rng.Next(10) == 0)
        {
            b[rng.Next(b.Length)] = (byte)(0x80 + rng.Next(0x80)); // invalid UTF-8
        }

        return b;
    }

    private (ulong Iova, ulong Size) Range(IReadOnlyList<FuzzMapping> mappings)
    {
        if (mappings.Count > 0 && rng.Next(2) == 0)
        {
            FuzzMapping a = mappings[rng.Next(mappings.Count)];
            FuzzMapping z = mappings[rng.Next(mappings.Count)];
            (FuzzMapping lo, FuzzMapping hi) = a.Iova <= z.Iova ? (a, z) : (z, a);
            return rng.Next(4) switch
            {
                0 => (lo.Iova, lo.Size), // exactly one mapping
                1 => (lo.Iova, hi.Iova + hi.Size - lo.Iova), // several whole mappings
                2 => (lo.Iova + FuzzBed.PageSize, lo.Size), // bisects at the start
                _ => (lo.Iova, Math.Max(FuzzBed.PageSize, lo.Size - FuzzBed.PageSize)), // bisects at the end
            };
        }

        return rng.Next(3) == 0 ? (Pick(Iovas), Pick(Sizes)) : (IovaNear(), SizeSmall());
    }

    private void WriteBitmap(Span<byte> b, ulong size)
    {
        ulong pgsize = rng.Next(6) switch
        {
            < 3 => FuzzBed.PageSize,
            3 => 0,
            4 => 0x800,
            _ => rng.Next(2) == 0 ? 0x2000UL : 0x200000UL,
        };
        ulong pages = pgsize == 0 ? size : size / pgsize;
        ulong needed = ((pages + 63) / 64) * 8;
        ulong bmSize = rng.Next(6) switch
        {
            < 3 => needed,
            3 => needed == 0 ? 0 : needed - 1,
            4 => 0,
            _ => rng.Next(2) == 0 ? (256UL << 20) + 8 : ulong.MaxValue,
        };
        ulong data = rng.Next(8) switch
        {
            < 5 => bed.BitmapBuf,
            5 => 0,
            6 => bed.Hole,
            _ => rng.Next(2) == 0 ? 0xffff_8880_0000_0000UL : 0x7fff_ffff_f000UL - 8,
        };
        BinaryPrimitives.WriteUInt64LittleEndian(b, pgsize);
        BinaryPrimitives.WriteUInt64LittleEndian(b[8..], bmSize);
        BinaryPrimitives.WriteUInt64LittleEndian(b[16..], data);
    }

    private ulong Vaddr() => rng.Next(16) switch
    {
        < 7 => bed.RwBuf + (FuzzBed.PageSize * (ulong)rng.Next(0, (int)FuzzBed.RwPages)),
        7 => bed.RoBuf + (FuzzBed.PageSize * (ulong)rng.Next(0, 8)),
        8 => bed.NoneBuf,
        9 => bed.ZeroBuf + (FuzzBed.PageSize * (ulong)rng.Next(0, 4)),
        10 => bed.Hole,
        11 => 0,
        12 => bed.RwBuf + (ulong)rng.Next(1, 4096),
        13 => 0xffff_8880_0000_0000UL,
        14 => ulong.MaxValue - 0xfff,
        _ => (ulong)rng.NextInt64() & ~0xfffUL,
    };

    // Small IOVAs in a window so that maps collide, bisect and get unmapped by later inputs.
    private ulong IovaNear() => rng.Next(10) switch
    {
        < 7 => 0x10_0000 + (FuzzBed.PageSize * (ulong)rng.Next(0, 96)),
        7 => Pick(Iovas),
        8 => 0x10_0000 + (ulong)rng.Next(1, 4096),
        _ => 0xfee0_0000 - (FuzzBed.PageSize * (ulong)rng.Next(0, 4)),
    };

    private ulong SizeSmall() => rng.Next(10) switch
    {
        < 7 => FuzzBed.PageSize * (ulong)rng.Next(1, 9),
        7 => Pick(Sizes),
        8 => FuzzBed.PageSize * (ulong)rng.Next(1, 9) + (ulong)rng.Next(1, 4096),
        _ => FuzzBed.PageSize * (ulong)rng.Next(9, 80),
    };

    private static byte[] Header(uint argsz, uint flags, int len)
    {
        byte[] b = new byte[len];
        if (len >= 4)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(b, argsz);
        }

        if (len >= 8)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), flags);
        }

        return b;
    }

    private byte[] RandomBytes(int n)
    {
        byte[] b = new byte[n];
        rng.NextBytes(b);
        return b;
    }

    private T Pick<T>(T[] values) => values[rng.Next(values.Length)];
}
