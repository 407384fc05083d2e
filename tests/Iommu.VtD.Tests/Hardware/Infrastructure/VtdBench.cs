using Iommu.Memory;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Hardware.Infrastructure;

/// <summary>
/// A unit plus memory plus hand-written table builders. Every entry is encoded here with literal
/// bit positions from the spec, independently of the model's own constants.
/// </summary>
internal sealed class VtdBench : IDisposable
{
    public const ulong MemorySize = 1UL << 30;      // 1 GiB
    public const ulong BeyondMemory = 0x40_0000_0000; // below a 46-bit HAW, outside memory

    private ulong _nextFrame = 0x0100_0000;

    public VtdBench(VtdConfig config)
        : this(config, new PhysicalMemory(MemorySize))
    {
    }

    /// <summary>A bench over memory the test built (caller-owned RAM with holes, say); the bench disposes it.</summary>
    public VtdBench(VtdConfig config, PhysicalMemory memory)
    {
        Memory = memory;
        Unit = new VtdUnit(Memory, config);
        Config = config;
        RootTable = AllocFrame();
    }

    public PhysicalMemory Memory { get; }

    public VtdUnit Unit { get; }

    public VtdConfig Config { get; }

    public ulong RootTable { get; }

    public List<(ulong Address, uint Data)> FaultInterrupts { get; } = [];

    public ulong AllocFrame()
    {
        ulong pa = _nextFrame;
        _nextFrame += 0x1000;
        return pa;
    }

    public ulong AllocFrames(int count)
    {
        ulong pa = _nextFrame;
        _nextFrame += 0x1000UL * (ulong)count;
        return pa;
    }

    public void Dispose() => Memory.Dispose();

    // ---- driver-like register programming ----

    public void Gcmd(uint bit)
    {
        uint sts = Unit.Read32(0x1C);
        Unit.Write32(0x18, (sts & 0x96FF_FFFF) | bit);
    }

    public void GcmdClear(uint bit)
    {
        uint sts = Unit.Read32(0x1C);
        Unit.Write32(0x18, sts & 0x96FF_FFFF & ~bit);
    }

    public void Enable(bool scalable)
    {
        Unit.Write64(0x20, RootTable | (scalable ? 1UL << 10 : 0));
        Gcmd(1u << 30); // SRTP
        Gcmd(1u << 31); // TE
    }

    public ulong Cap => Unit.Read64(0x08);

    public ulong Ecap => Unit.Read64(0x10);

    public uint FaultRecordBase => (uint)((Cap >> 24) & 0x3FF) * 16;

    public uint IotlbRegBase => (uint)((Ecap >> 8) & 0x3FF) * 16;

    public (ulong Lo, ulong Hi) FaultRecord(int i) =>
        (Unit.Read64(FaultRecordBase + (uint)(16 * i)), Unit.Read64(FaultRecordBase + (uint)(16 * i) + 8));

    public void ClearFaultRecord(int i) => Unit.Write32(FaultRecordBase + (uint)(16 * i) + 12, 0x8000_0000);

    public uint Fsts => Unit.Read32(0x34);

    public void GlobalContextInvalidate() => Unit.Write64(0x28, (1UL << 63) | (1UL << 61));

    public void GlobalIotlbInvalidate() => Unit.Write64(IotlbRegBase + 8, (1UL << 63) | (1UL << 60));

    // ---- legacy structures ----

    public void LegacyRoot(int bus, ulong contextTable, ulong extraLow = 0, ulong high = 0)
    {
        Memory.WriteUInt64(RootTable + ((ulong)bus * 16), contextTable | 1 | extraLow);
        Memory.WriteUInt64(RootTable + ((ulong)bus * 16) + 8, high);
    }

    public static ulong LegacyContextLow(ulong slptptr, int tt = 0, bool fpd = false, bool present = true) =>
        slptptr | ((ulong)tt << 2) | (fpd ? 2UL : 0) | (present ? 1UL : 0);

    public static ulong LegacyContextHigh(int aw, ushort did) => (uint)aw | ((ulong)did << 8);

    public void LegacyContext(ulong contextTable, int devfn, ulong low, ulong high)
    {
        Memory.WriteUInt64(contextTable + ((ulong)devfn * 16), low);
        Memory.WriteUInt64(contextTable + ((ulong)devfn * 16) + 8, high);
    }

    /// <summary>Root + context table + second-level root for one device in legacy mode; returns the SL root.</summary>
    public ulong SetupLegacyDevice(ushort rid, int aw, ushort did, int tt = 0, bool fpd = false)
    {
        ulong ctx = ContextTableFor(rid >> 8, scalableUpper: false);
        ulong sl = AllocFrame();
        LegacyContext(ctx, rid & 0xFF, LegacyContextLow(sl, tt, fpd), LegacyContextHigh(aw, did));
        return sl;
    }

    private readonly Dictionary<(int Bus, bool Upper), ulong> _contextTables = [];

    public ulong ContextTableFor(int bus, bool scalableUpper)
    {
        if (!_contextTables.TryGetValue((bus, scalableUpper), out ulong ctx))
        {
            ctx = AllocFrame();
            _contextTables[(bus, scalableUpper)] = ctx;
            ulong rootPa = RootTable + ((ulong)bus * 16) + (scalableUpper ? 8UL : 0);
            Memory.WriteUInt64(rootPa, ctx | 1);
        }

        return ctx;
    }

    // ---- second-level page tables ----

    /// <summary>Maps iova → pa with a leaf at <paramref name="leafLevel"/> (1 = 4K, 2 = 2M, 3 = 1G).</summary>
    public void Map(ulong slRoot, int levels, ulong iova, ulong pa, int leafLevel = 1, bool read = true, bool write = true, ulong extraLeafBits = 0)
    {
        ulong table = slRoot;
        for (int level = levels; level > leafLevel; level--)
        {
            ulong slot = table + (((iova >> (12 + (9 * (level - 1)))) & 0x1FF) * 8);
            ulong e = Memory.ReadUInt64(slot);
            if ((e & 3) == 0)
            {
                ulong next = AllocFrame();
                e = next | 3; // R|W
                Memory.WriteUInt64(slot, e);
            }

            table = e & 0x000F_FFFF_FFFF_F000;
        }

        ulong leaf = pa | (read ? 1UL : 0) | (write ? 2UL : 0) | (leafLevel > 1 ? 1UL << 7 : 0) | extraLeafBits;
        Memory.WriteUInt64(table + (((iova >> (12 + (9 * (leafLevel - 1)))) & 0x1FF) * 8), leaf);
    }

    /// <summary>Address of the entry at <paramref name="level"/> that maps <paramref name="iova"/> (tables must exist above it).</summary>
    public ulong EntryAddress(ulong slRoot, int levels, ulong iova, int level)
    {
        ulong table = slRoot;
        for (int l = levels; l > level; l--)
        {
            table = Memory.ReadUInt64(table + (((iova >> (12 + (9 * (l - 1)))) & 0x1FF) * 8)) & 0x000F_FFFF_FFFF_F000;
        }

        return table + (((iova >> (12 + (9 * (level - 1)))) & 0x1FF) * 8);
    }

    // ---- scalable-mode structures ----

    public void ScalableContext(ushort rid, ulong pasidDir, int pdts = 0, bool paside = true, uint ridPasid = 0, bool fpd = false, ulong extraLow = 0, ulong extraHigh = 0)
    {
        int devfn = rid & 0xFF;
        ulong ctx = ContextTableFor(rid >> 8, scalableUpper: devfn >= 128);
        ulong pa = ctx + ((ulong)(devfn & 0x7F) * 32);
        Memory.WriteUInt64(pa, pasidDir | ((ulong)pdts << 9) | (paside ? 1UL << 3 : 0) | (fpd ? 2UL : 0) | 1 | extraLow);
        Memory.WriteUInt64(pa + 8, ridPasid | extraHigh);
        Memory.WriteUInt64(pa + 16, 0);
        Memory.WriteUInt64(pa + 24, 0);
    }

    /// <summary>Directory entry for the PASID table holding <paramref name="pasid"/>; returns that table.</summary>
    public ulong PasidTableFor(ulong pasidDir, uint pasid, bool fpd = false)
    {
        ulong slot = pasidDir + ((ulong)(pasid >> 6) * 8);
        ulong d = Memory.ReadUInt64(slot);
        if ((d & 1) == 0)
        {
            d = AllocFrame() | 1 | (fpd ? 2UL : 0);
            Memory.WriteUInt64(slot, d);
        }

        return d & ~0xFFFUL;
    }

    public static ulong PasidEntryLow(ulong slptptr, int aw, int pgtt, bool fpd = false, bool present = true) =>
        slptptr | ((ulong)aw << 2) | ((ulong)pgtt << 6) | (fpd ? 2UL : 0) | (present ? 1UL : 0);

    public void PasidEntry(ulong pasidDir, uint pasid, ulong q0, ushort did, ulong q1Extra = 0, ulong q2 = 0)
    {
        ulong table = PasidTableFor(pasidDir, pasid);
        ulong pa = table + ((ulong)(pasid & 0x3F) * 64);
        Memory.WriteUInt64(pa, q0);
        Memory.WriteUInt64(pa + 8, did | q1Extra);
        Memory.WriteUInt64(pa + 16, q2);
        for (ulong i = 3; i < 8; i++)
        {
            Memory.WriteUInt64(pa + (i * 8), 0);
        }
    }

    public ulong PasidEntryAddress(ulong pasidDir, uint pasid) => PasidTableFor(pasidDir, pasid) + ((ulong)(pasid & 0x3F) * 64);

    /// <summary>Scalable context + PASID directory + second-level PASID entry for (rid, pasid); returns (dir, SL root).</summary>
    public (ulong Dir, ulong SlRoot) SetupScalableDevice(ushort rid, uint pasid, int aw, ushort did, int pgtt = 2, uint ridPasid = 0)
    {
        ulong dir = AllocFrame();
        ScalableContext(rid, dir, pdts: 7, ridPasid: ridPasid);
        ulong sl = AllocFrame();
        PasidEntry(dir, pasid, PasidEntryLow(sl, aw, pgtt), did);
        return (dir, sl);
    }

    // ---- queued invalidation ----

    private ulong _queue;
    private bool _wide;
    private int _tail;

    public void EnableQueue(bool wide)
    {
        _queue = AllocFrames(2);
        _wide = wide;
        Unit.Write64(0x88, 0);
        Unit.Write64(0x90, _queue | (wide ? 1UL << 11 : 0) | (wide ? 1UL : 0));
        Gcmd(1u << 26);
    }

    public void Submit(ulong q0, ulong q1 = 0, ulong q2 = 0, ulong q3 = 0)
    {
        int size = _wide ? 32 : 16;
        int entries = (_wide ? 8192 : 4096) / size;
        ulong pa = _queue + (ulong)(_tail * size);
        Memory.WriteUInt64(pa, q0);
        Memory.WriteUInt64(pa + 8, q1);
        if (_wide)
        {
            Memory.WriteUInt64(pa + 16, q2);
            Memory.WriteUInt64(pa + 24, q3);
        }

        _tail = (_tail + 1) % entries;
        Unit.Write64(0x88, (ulong)_tail << (_wide ? 5 : 4));
    }

    public ulong QueueHead => Unit.Read64(0x80) >> (_wide ? 5 : 4);

    public ulong QueueTailIndex => (ulong)_tail;

    public static ulong Ones(int bits) => bits >= 64 ? ulong.MaxValue : (1UL << bits) - 1;
}
