using System.Buffers.Binary;
using CsCheck;
using Iommu;
using Iommu.Devices;
using Iommu.VtD.Hardware;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>
/// A v2 container over random sequences of MAP_DMA (random sizes, 0 and unaligned included, overlapping,
/// out-of-buffer vaddrs, READ, WRITE or both), UNMAP_DMA (holes, bisections, whole mappings, wrapping,
/// ending at 2^64, ALL, GET_DIRTY_BITMAP), DIRTY_PAGES (START, STOP, GET_BITMAP), and three PCI groups
/// joining and leaving (one on a second, wider VT-d unit; the last one leaving releases the backend),
/// under a small RLIMIT_MEMLOCK without CAP_IPC_LOCK and sometimes a small dma_entry_limit. A reference
/// written from 5.15's vfio_iommu_type1.c predicts each call's errno and returned size, the mappings,
/// locked_vm, dma_avail and the user's dirty bitmap; after each call every page of the IOVA window is
/// read and written by every device: an attached device reaches exactly the pinned page with the
/// mapping's permission, anything else faults.
/// </summary>
public sealed class Type1SemanticsPropertyTests
{
    private const ulong P = Sizes.Page;
    private const ulong Space = 0x4000_0000;   // the IOVA window: [Space, Space + Slots pages)
    private const int Slots = 40;
    private const int BufferPages = 24;        // the data buffer; the pages after it are not mapped
    private const int ReadOnlyFrom = 12;       // pages [12, 16) are read-only
    private const int UnwrittenFrom = 16;      // pages [16, 24) were never written: a READ pin takes the zero page
    private const ulong BitmapBytes = P;

    private static readonly string[] Bdfs = ["0000:00:03.0", "0000:00:04.0", "0000:05:00.0"];

    // (kind, a, b, c, d)
    internal static readonly Gen<(int Kind, int A, int B, int C, int D)> OpGen =
        Gen.Select(Gen.Int[0, 13], Gen.Int[0, Slots - 1], Gen.Int[0, 11], Gen.Int[0, BufferPages + 2], Gen.Int[0, 7]);

    [Fact]
    public void Map_unmap_dirty_and_group_changes_agree_with_5_15_and_device_dma_reaches_exactly_the_mapped_pages()
    {
        Gen.Select(Gen.Int[4, 40], Gen.Bool, OpGen.Array[1, 60])
            .Sample((limitPages, smallEntryLimit, ops) => Run(limitPages, smallEntryLimit, ops), iter: 120);
    }

    /// <summary>
    /// One run of the property; <paramref name="observe"/> (given the bed before any group is opened) also checks
    /// something after every step, e.g. the metrics (<see cref="Type1MetricsPropertyTests"/>).
    /// </summary>
    internal static void Run(int limitPages, bool smallEntryLimit, (int Kind, int A, int B, int C, int D)[] ops, Func<Type1Bed, IType1StepObserver>? observe = null)
    {
        uint entryLimit = smallEntryLimit ? 4u : 65535u;
        using var bed = new Type1Bed(options: new VfioType1Options { AllowUnsafeInterrupts = true, DmaEntryLimit = entryLimit }, secondUnit: VtdConfig.Legacy48Bit);
        using IType1StepObserver? observer = observe?.Invoke(bed);
        bed.Proc.CapIpcLock = false;
        bed.Proc.RlimitMemlock = (ulong)limitPages * P;
        PciDevice[] devs = [.. Bdfs.Select(b => bed.AddDevice(b))];
        var groups = new VfioGroup[devs.Length];
        for (int i = 0; i < devs.Length; i++)
        {
            bed.Vfio.OpenGroup(bed.Proc, devs[i].IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
            groups[i] = g!;
        }

        ulong bitmap = bed.Proc.Mmap(BitmapBytes);
        ulong buffer = bed.Proc.Mmap(BufferPages * P); // last: nothing is mapped after it
        for (int i = 0; i < UnwrittenFrom; i++)
        {
            bed.Proc.Write(buffer + ((ulong)i * P), Enumerable.Repeat((byte)(0x10 + i), (int)P).ToArray()).ThrowIfError();
        }

        bed.Proc.Mprotect(buffer + (ReadOnlyFrom * P), (UnwrittenFrom - ReadOnlyFrom) * P, Iommu.Mm.VmProt.Read);
        VfioContainer c = bed.Vfio.OpenContainer(bed.Proc, out _);
        var model = new Type1Model(entryLimit, (ulong)limitPages, buffer, BufferPages, ReadOnlyFrom, UnwrittenFrom);
        var rng = new Random(ops.Length);
        int step = 0;

        foreach ((int kind, int a, int b, int cc, int d) in ops)
        {
            step++;
            string what;
            if (kind <= 3)
            {
                // MAP: iova slot a, b pages (0 included), vaddr page cc of the buffer (past its end included), d: flags and misalignment.
                uint flags = (uint)(d % 4); // 0 is no permission at all
                ulong iova = Space + ((ulong)a * P) + (d == 4 ? 0x800UL : 0);
                ulong size = ((ulong)b * P) + (d == 5 ? 0x200UL : 0);
                ulong vaddr = buffer + ((ulong)cc * P) + (d == 6 ? 0x10UL : 0);
                if (d == 7)
                {
                    (iova, size) = (0UL - ((ulong)(b + 1) * P), (ulong)(cc + 1) * P); // at or over the top of the space
                    flags = 3;
                }
                else if (d >= 4)
                {
                    flags = 3;
                }

                what = $"MAP flags {flags} iova 0x{iova:x} size 0x{size:x} vaddr +0x{vaddr - buffer:x}";
                Errno expected = model.Map(flags, vaddr, iova, size);
                Errno e = c.MapDma(Type1Bed.Map(vaddr, iova, size, flags));
                Assert.True(expected == e, $"step {step}: {what}: 5.15 {expected}, model {e}");
            }
            else if (kind <= 6)
            {
                // UNMAP: d picks the shape; half of them hit existing mappings exactly.
                (ulong iova, ulong size) = (Space + ((ulong)a * P), (ulong)b * P);
                if (d <= 2 && model.Dmas.Count > 0)
                {
                    Type1Model.Dma t = model.Dmas[a % model.Dmas.Count];
                    Type1Model.Dma u = model.Dmas[Math.Min(model.Dmas.Count - 1, (a % model.Dmas.Count) + (b % 3))];
                    // whole mappings and the holes between them; the same one page short (ending inside u); one page in
                    (iova, size) = d == 2 ? (t.Iova + P, t.Size) : (t.Iova, u.Iova + u.Size - t.Iova - (d == 1 ? P : 0));
                }
                else if (d == 3)
                {
                    size = 0UL - iova; // ends exactly at 2^64
                }
                else if (d == 4)
                {
                    size = 0UL - iova + P; // wraps
                }
                else if (d == 5)
                {
                    iova += 0x800;
                }

                uint flags = kind == 6 && (cc & 1) == 0 ? VfioUapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP : 0;
                if (kind == 6 && (cc & 1) != 0)
                {
                    flags = VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL;
                    (iova, size) = cc == 3 ? (Space, 0UL) : (0UL, 0UL);
                }

                ulong[] before = Prefill(bed, bitmap, rng);
                var bm = new VfioBitmap(P, BitmapBytes, bitmap);
                what = $"UNMAP flags {flags} iova 0x{iova:x} size 0x{size:x}";
                Errno expected = model.Unmap(flags, iova, size, before, out ulong expectedSize);
                var unmap = new VfioIommuType1DmaUnmap(flags == VfioUapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP ? 48u : 24u, flags, iova, size, bm);
                Errno e = c.UnmapDma(ref unmap);
                Assert.True(expected == e, $"step {step}: {what}: 5.15 {expected}, model {e}");
                Assert.True((e == Errno.None ? expectedSize : size) == unmap.Size, $"step {step}: {what}: 5.15 wrote 0x{expectedSize:x}, model 0x{unmap.Size:x}");
                Assert.True(before.SequenceEqual(ReadBitmap(bed, bitmap)), $"step {step}: {what}: user bitmap differs from 5.15's");
            }
            else if (kind <= 8)
            {
                // DIRTY_PAGES: START, STOP, or GET_BITMAP over a range from a mapping's start (or a random one).
                ulong[] before = Prefill(bed, bitmap, rng);
                Errno e, expected;
                if (d <= 1)
                {
                    uint flags = d == 0 ? VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START : VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP;
                    what = $"DIRTY_PAGES {flags}";
                    expected = model.DirtyPages(flags);
                    e = c.DirtyPages(flags);
                }
                else
                {
                    (ulong iova, ulong size) = (Space + ((ulong)a * P), (ulong)b * P);
                    if (d <= 4 && model.Dmas.Count > 0)
                    {
                        Type1Model.Dma t = model.Dmas[a % model.Dmas.Count];
                        (iova, size) = (d == 4 ? Space : t.Iova, t.Iova + t.Size - (d == 4 ? Space : t.Iova) + ((ulong)(b % 3) * P) - (d == 3 ? P : 0));
                    }
                    else if (d == 5)
                    {
                        size = 0UL - iova; // ends exactly at 2^64: iova + size < iova
                    }

                    what = $"GET_BITMAP iova 0x{iova:x} size 0x{size:x}";
                    expected = model.GetBitmap(iova, size, before);
                    e = c.GetDirtyBitmap(iova, size, new VfioBitmap(P, BitmapBytes, bitmap));
                }

                Assert.True(expected == e, $"step {step}: {what}: 5.15 {expected}, model {e}");
                Assert.True(before.SequenceEqual(ReadBitmap(bed, bitmap)), $"step {step}: {what}: user bitmap differs from 5.15's");
            }
            else if (kind <= 11)
            {
                // A group joins or leaves.
                int gi = a % groups.Length;
                VfioGroup g = groups[gi];
                if (model.Attached[gi])
                {
                    what = $"UNSET_CONTAINER group {gi}";
                    Assert.Equal(Errno.None, g.UnsetContainer());
                    model.Detach(gi);
                }
                else
                {
                    what = $"SET_CONTAINER group {gi}";
                    Assert.Equal(Errno.None, g.SetContainer(c));
                    if (!model.Backend)
                    {
                        Assert.Equal(Errno.None, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
                    }

                    model.Attach(gi);
                }
            }
            else
            {
                // The device writes one page of the window (the sweep below reads and writes all of them).
                what = "nothing";
            }

            Check(bed, c, devs, model, buffer, $"step {step}: after {what}");
            observer?.After(c, model, $"step {step}: after {what}");
        }
    }

    private static void Check(Type1Bed bed, VfioContainer c, PciDevice[] devs, Type1Model model, ulong buffer, string where)
    {
        VfioIommuType1? backend = c.Backend;
        Assert.True(model.Backend == (backend is not null), $"{where}: backend");
        if (backend is not null)
        {
            Assert.True(
                model.Dmas.Select(m => (m.Iova, m.Size, m.Vaddr, m.Prot)).SequenceEqual(backend.Mappings.Select(m => (m.Iova, m.Size, m.Vaddr, (uint)m.Prot))),
                $"{where}: mappings: 5.15 [{string.Join(", ", model.Dmas.Select(m => $"0x{m.Iova:x}+0x{m.Size:x}"))}], model [{string.Join(", ", backend.Mappings.Select(m => $"0x{m.Iova:x}+0x{m.Size:x}"))}]");
            Assert.True(model.DmaAvail == backend.DmaAvail, $"{where}: dma_avail 5.15 {model.DmaAvail}, model {backend.DmaAvail}");
            Assert.True(model.Tracking == backend.DirtyTracking, $"{where}: dirty tracking");
            backend.Audit();
        }

        Assert.True(model.LockedVm == bed.Proc.LockedVm, $"{where}: locked_vm 5.15 {model.LockedVm}, model {bed.Proc.LockedVm}");

        // Every page of the window, one page before and after, from every device.
        Span<byte> got = stackalloc byte[8];
        Span<byte> mem = stackalloc byte[8];
        for (int i = 0; i < devs.Length; i++)
        {
            for (int s = -1; s <= Slots; s++)
            {
                ulong iova = Space + (ulong)((long)s * (long)P) + 0x40;
                Type1Model.Dma? m = model.Attached[i] ? model.Dmas.FirstOrDefault(x => x.Iova <= iova && iova - x.Iova < x.Size) : null;
                ulong va = m is null ? 0 : m.Vaddr + (iova - m.Iova);
                DmaResult r = devs[i].DmaRead(null, iova, got);
                // 5.15's intel-iommu writes a WRITE-only mapping's leaf R+W (eea53c581688): the device reads it too.
                bool canRead = m is not null;
                Assert.True(canRead == r.IsOk, $"{where}: device {i} read of 0x{iova:x}: 5.15 {(canRead ? "reaches the page" : "faults")}, model {r.Status}");
                if (canRead)
                {
                    // A page pinned as the zero page stays the zero page for the device, whatever the process does later.
                    bed.Proc.Read(va, mem).ThrowIfError();
                    bool zero = m!.ZeroPage[(int)((iova - m.Iova) / Sizes.Page)];
                    Assert.True(zero ? got.IndexOfAnyExcept((byte)0) < 0 : mem.SequenceEqual(got), $"{where}: device {i} read of 0x{iova:x} is not the page at vaddr +0x{va - buffer:x}{(zero ? " (the zero page)" : "")}");
                }

                byte[] value = BitConverter.GetBytes(((ulong)(i + 1) << 56) | iova);
                byte[] old = new byte[8];
                if (m is not null)
                {
                    bed.Proc.Read(va, old).ThrowIfError();
                }

                r = devs[i].DmaWrite(null, iova, value);
                bool canWrite = m is not null && (m.Prot & 2) != 0;
                Assert.True(canWrite == r.IsOk, $"{where}: device {i} write of 0x{iova:x}: 5.15 {(canWrite ? "reaches the page" : "faults")}, model {r.Status}");
                if (m is not null && !m.ZeroPage[(int)((iova - m.Iova) / Sizes.Page)])
                {
                    bed.Proc.Read(va, mem).ThrowIfError();
                    Assert.True(mem.SequenceEqual(canWrite ? value : old), $"{where}: device {i} write of 0x{iova:x}: the page at vaddr +0x{va - buffer:x} holds the wrong bytes");
                }
            }
        }
    }

    private static ulong[] Prefill(Type1Bed bed, ulong bitmap, Random rng)
    {
        var words = new ulong[BitmapBytes / 8];
        int pattern = rng.Next(3);
        for (int w = 0; w < words.Length; w++)
        {
            words[w] = pattern switch { 0 => 0, 1 => ulong.MaxValue, _ => (ulong)rng.NextInt64() };
        }

        var bytes = new byte[BitmapBytes];
        for (int w = 0; w < words.Length; w++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(w * 8), words[w]);
        }

        bed.Proc.Write(bitmap, bytes).ThrowIfError();
        return words;
    }

    private static ulong[] ReadBitmap(Type1Bed bed, ulong bitmap)
    {
        var bytes = new byte[BitmapBytes];
        bed.Proc.Read(bitmap, bytes).ThrowIfError();
        return [.. Enumerable.Range(0, (int)(BitmapBytes / 8)).Select(w => BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(w * 8)))];
    }
}

/// <summary>Checks made after every step of <see cref="Type1SemanticsPropertyTests"/>' run, against its reference model.</summary>
internal interface IType1StepObserver : IDisposable
{
    void After(VfioContainer c, Type1Model model, string where);
}

/// <summary>
/// 5.15's type1 for one v2 container whose groups are all IOMMU-backed PCI groups (never in pinned-page
/// dirty scope) and whose process has no CAP_IPC_LOCK: vfio_dma_do_map with vfio_pin_pages_remote's
/// RLIMIT_MEMLOCK check, vfio_dma_do_unmap, vfio_iommu_type1_dirty_pages with update_user_bitmap's
/// word-granular copy and stale bits, attach and detach (the last group leaving releases everything).
/// Mappings lie far below 2^64, so the rb-tree walks equal scans of the sorted list.
/// </summary>
internal sealed class Type1Model(uint dmaEntryLimit, ulong limitPages, ulong bufferStart, int bufferPages, int readOnlyFrom, int unwrittenFrom)
{
    private const ulong P = Sizes.Page;

    // Pages of the buffer a pin has faulted in (a WRITE pin of a never-written page gives it its own page).
    private readonly bool[] _materialized = [.. Enumerable.Range(0, bufferPages).Select(i => i < unwrittenFrom)];

    public List<Dma> Dmas { get; } = [];

    public bool[] Attached { get; } = new bool[3];

    public bool Backend { get; private set; }

    public uint DmaAvail { get; private set; }

    public long LockedVm { get; private set; }

    public bool Tracking { get; private set; }

    public Errno Map(uint flags, ulong vaddr, ulong iova, ulong size)
    {
        if (!Backend)
        {
            return Errno.EINVAL; // the container ioctl has no driver
        }

        uint prot = flags & 3;
        if (prot == 0)
        {
            return Errno.EINVAL;
        }

        if (size == 0 || ((size | iova | vaddr) & (P - 1)) != 0)
        {
            return Errno.EINVAL;
        }

        if (iova + size - 1 < iova || vaddr + size - 1 < vaddr)
        {
            return Errno.EINVAL;
        }

        if (Dmas.Any(d => iova < d.Iova + d.Size && d.Iova < iova + size))
        {
            return Errno.EEXIST;
        }

        if (DmaAvail == 0)
        {
            return Errno.ENOSPC;
        }

        if (iova + size - 1 >= 1UL << 39 || (iova <= 0xFEEF_FFFF && iova + size - 1 >= 0xFEE0_0000))
        {
            return Errno.EINVAL; // not inside one range of the IOVA list (39-bit aperture, MSI window)
        }

        // vfio_pin_pages_remote: page by page, GUP (FOLL_WRITE for a WRITE mapping) then, unless it is the
        // zero page (reserved, never charged), the RLIMIT check; a failed map leaves no trace.
        // The batch (up to 512 pages, so the whole request here) is pinned by one pin_user_pages_remote up to the
        // first page GUP refuses, before any page is charged: a WRITE pin faults in every page of it, and those
        // stay the process's own pages even when the map then fails.
        bool write = (prot & 2) != 0;
        int pages = (int)(size / P);
        int first = vaddr < bufferStart ? -1 : (int)Math.Min((vaddr - bufferStart) / P, int.MaxValue);
        int gup = 0;
        while (gup < pages && first >= 0 && first + gup < bufferPages && !(write && first + gup >= readOnlyFrom && first + gup < unwrittenFrom))
        {
            gup++;
        }

        var zero = new bool[pages];
        for (int k = 0; k < gup; k++)
        {
            zero[k] = !write && !_materialized[first + k];
            _materialized[first + k] |= write;
        }

        long charge = 0;
        for (int k = 0; k < gup; k++)
        {
            if (!zero[k])
            {
                if ((ulong)(LockedVm + charge + 1) > limitPages)
                {
                    return Errno.ENOMEM;
                }

                charge++;
            }
        }

        if (gup < pages)
        {
            return Errno.EFAULT;
        }

        DmaAvail--;
        LockedVm += charge;
        Dmas.Add(new Dma(iova, size, vaddr, prot, zero) { Bitmap = Tracking ? NewBitmap(size) : null });
        Dmas.Sort((x, y) => x.Iova.CompareTo(y.Iova));
        return Errno.None;
    }

    public Errno Unmap(uint flags, ulong iova, ulong size, ulong[] user, out ulong unmapped)
    {
        unmapped = 0;
        if (!Backend)
        {
            return Errno.EINVAL;
        }

        bool all = flags == VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL;
        bool dirty = flags == VfioUapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
        if (dirty && !VerifyBitmapSize(size >> 12, (ulong)user.Length * 8))
        {
            return Errno.EINVAL;
        }

        if ((iova & (P - 1)) != 0)
        {
            return Errno.EINVAL;
        }

        if (all)
        {
            if (iova != 0 || size != 0)
            {
                return Errno.EINVAL;
            }

            size = ulong.MaxValue;
        }
        else if (size == 0 || (size & (P - 1)) != 0 || iova + size - 1 < iova)
        {
            return Errno.EINVAL;
        }

        if (dirty && !Tracking)
        {
            return Errno.EINVAL;
        }

        if (!all && Bisects(iova, size))
        {
            return Errno.EINVAL;
        }

        if (!all && iova + size == 0)
        {
            return Errno.None; // vfio_find_dma_first_node compares against start + size == 0
        }

        foreach (Dma d in Dmas.Where(d => d.Iova >= iova && d.Iova - iova <= size - 1).ToList())
        {
            if (dirty)
            {
                UpdateUserBitmap(user, iova, d);
            }

            unmapped += d.Size;
            Remove(d);
        }

        return Errno.None;
    }

    public Errno DirtyPages(uint flags)
    {
        if (!Backend)
        {
            return Errno.EINVAL;
        }

        if (flags == VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START)
        {
            if (!Tracking)
            {
                Dmas.ForEach(d => d.Bitmap = NewBitmap(d.Size));
                Tracking = true;
            }
        }
        else
        {
            Dmas.ForEach(d => d.Bitmap = null);
            Tracking = false;
        }

        return Errno.None;
    }

    public Errno GetBitmap(ulong iova, ulong size, ulong[] user)
    {
        if (!Backend)
        {
            return Errno.EINVAL;
        }

        if (iova + size < iova || !VerifyBitmapSize(size >> 12, (ulong)user.Length * 8))
        {
            return Errno.EINVAL;
        }

        if ((iova & (P - 1)) != 0 || size == 0 || (size & (P - 1)) != 0 || !Tracking || Bisects(iova, size))
        {
            return Errno.EINVAL;
        }

        foreach (Dma d in Dmas.Where(d => d.Iova >= iova && d.Iova <= iova + size - 1))
        {
            UpdateUserBitmap(user, iova, d);
        }

        return Errno.None;
    }

    public void Attach(int group)
    {
        Attached[group] = true;
        if (!Backend)
        {
            Backend = true;
            DmaAvail = dmaEntryLimit; // sampled when the backend is opened
        }
    }

    public void Detach(int group)
    {
        Attached[group] = false;
        if (!Attached.Any(a => a))
        {
            // vfio_iommu_type1_release: every mapping goes, locked_vm with them.
            Dmas.ToList().ForEach(Remove);
            Backend = false;
            Tracking = false;
            return;
        }

        if (Tracking)
        {
            // The group was not in pinned-page scope: vfio_iommu_populate_bitmap_full.
            Dmas.ForEach(d => SetBits(d.Bitmap!, 0, d.Size / P));
        }
    }

    private void Remove(Dma d)
    {
        Dmas.Remove(d);
        LockedVm -= d.ZeroPage.Count(z => !z);
        DmaAvail++;
    }

    private bool Bisects(ulong iova, ulong size) =>
        Dmas.Any(d => (d.Iova < iova && iova - d.Iova < d.Size) || (d.Iova <= iova + size - 1 && iova + size - 1 - d.Iova < d.Size - 1));

    // update_user_bitmap: every page of an IOMMU-mapped mapping is dirty (no group is in pinned-page
    // scope); the mapping's bitmap is shifted left in place by the offset inside its first u64, the user's
    // whole first word ORed in, whole words copied out, and only the first nbits bits cleared.
    private static void UpdateUserBitmap(ulong[] user, ulong baseIova, Dma d)
    {
        ulong[] bm = d.Bitmap!;
        ulong nbits = d.Size / P;
        SetBits(bm, 0, nbits);
        ulong bitOffset = (d.Iova - baseIova) / P;
        int word = (int)(bitOffset / 64), shift = (int)(bitOffset % 64);
        if (shift != 0)
        {
            int lim = (int)((nbits + (ulong)shift + 63) / 64);
            for (int k = lim - 1; k >= 0; k--)
            {
                bm[k] = (bm[k] << shift) | (k > 0 ? bm[k - 1] >> (64 - shift) : 0);
            }

            bm[0] |= user[word];
        }

        int words = (int)((nbits + (ulong)shift + 63) / 64);
        for (int w = 0; w < words; w++)
        {
            user[word + w] = bm[w];
        }

        for (ulong b = 0; b < nbits; b++)
        {
            bm[b >> 6] &= ~(1UL << (int)(b & 63));
        }
    }

    private static ulong[] NewBitmap(ulong size) => new ulong[((size / P) + 64 + 63) / 64];

    private static void SetBits(ulong[] bm, ulong start, ulong count)
    {
        for (ulong b = start; b < start + count; b++)
        {
            bm[b >> 6] |= 1UL << (int)(b & 63);
        }
    }

    private static bool VerifyBitmapSize(ulong npages, ulong bytes) =>
        npages != 0 && bytes != 0 && bytes <= 256UL * Sizes.MiB && bytes >= (npages + 63) / 64 * 8;

    internal sealed class Dma(ulong iova, ulong size, ulong vaddr, uint prot, bool[] zeroPage)
    {
        public bool[] ZeroPage { get; } = zeroPage;

        public ulong Iova { get; } = iova;

        public ulong Size { get; } = size;

        public ulong Vaddr { get; } = vaddr;

        public uint Prot { get; } = prot;

        public ulong[]? Bitmap { get; set; }
    }
}
