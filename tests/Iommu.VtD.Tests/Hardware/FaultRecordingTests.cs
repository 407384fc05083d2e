using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

public class FaultRecordingTests
{
    private const ushort Rid = 0x0520;

    public static TheoryData<string, int> LegacyCases => new()
    {
        { "root-not-present", 0x1 },
        { "context-not-present", 0x2 },
        { "aw-not-in-sagaw", 0x3 },
        { "tt-reserved", 0x3 },
        { "slptptr-unreadable", 0x3 },
        { "beyond-agaw", 0x4 },
        { "write-to-read-only", 0x5 },
        { "write-to-not-present", 0x5 },
        { "read-not-present", 0x6 },
        { "read-of-write-only-path", 0x6 },
        { "table-below-top-unreadable", 0x7 },
        { "root-table-unreadable", 0x8 },
        { "context-table-unreadable", 0x9 },
        { "root-reserved-high", 0xA },
        { "root-reserved-low", 0xA },
        { "context-reserved-low", 0xB },
        { "context-reserved-high", 0xB },
        { "pte-bit-62", 0xC },
        { "pte-snp-without-sc", 0xC },
        { "pml4e-ps", 0xC },
        { "pde-2m-unaligned", 0xC },
        { "pte-beyond-haw", 0xC },
        { "output-in-interrupt-range", 0xE },
    };

    private static (ulong Iova, DmaAccess Access) SetUpLegacy(VtdBench b, string scenario)
    {
        const ulong iova = 0x7000;
        switch (scenario)
        {
            case "root-not-present":
                return (iova, DmaAccess.Read);
            case "context-not-present":
                b.ContextTableFor(Rid >> 8, false);
                return (iova, DmaAccess.Read);
            case "aw-not-in-sagaw":
                b.SetupLegacyDevice(Rid, aw: 3, did: 1);
                return (iova, DmaAccess.Read);
            case "tt-reserved":
                b.SetupLegacyDevice(Rid, aw: 2, did: 1, tt: 3);
                return (iova, DmaAccess.Read);
            case "slptptr-unreadable":
                b.LegacyContext(b.ContextTableFor(Rid >> 8, false), Rid & 0xFF, VtdBench.LegacyContextLow(VtdBench.BeyondMemory), VtdBench.LegacyContextHigh(2, 1));
                return (iova, DmaAccess.Read);
            case "beyond-agaw":
                b.SetupLegacyDevice(Rid, aw: 1, did: 1);
                return (1UL << 39, DmaAccess.Read);
            case "write-to-read-only":
                b.Map(b.SetupLegacyDevice(Rid, 2, 1), 4, iova, 0x9000, write: false);
                return (iova, DmaAccess.Write);
            case "write-to-not-present":
                b.SetupLegacyDevice(Rid, 2, 1);
                return (iova, DmaAccess.Write);
            case "read-not-present":
                b.Map(b.SetupLegacyDevice(Rid, 2, 1), 4, iova + 0x1000, 0x9000);
                return (iova, DmaAccess.Read);
            case "read-of-write-only-path":
            {
                ulong sl = b.SetupLegacyDevice(Rid, 2, 1);
                b.Map(sl, 4, iova, 0x9000);
                ulong pml4e = b.EntryAddress(sl, 4, iova, 4);
                b.Memory.WriteUInt64(pml4e, b.Memory.ReadUInt64(pml4e) & ~1UL); // W only
                return (iova, DmaAccess.Read);
            }

            case "table-below-top-unreadable":
            {
                ulong sl = b.SetupLegacyDevice(Rid, 2, 1);
                b.Memory.WriteUInt64(sl, VtdBench.BeyondMemory | 3);
                return (iova, DmaAccess.Read);
            }

            case "root-table-unreadable":
                b.Unit.Write64(0x20, VtdBench.BeyondMemory);
                b.Gcmd(1u << 30);
                return (iova, DmaAccess.Read);
            case "context-table-unreadable":
                b.LegacyRoot(Rid >> 8, VtdBench.BeyondMemory);
                return (iova, DmaAccess.Read);
            case "root-reserved-high":
                b.LegacyRoot(Rid >> 8, b.AllocFrame(), high: 1);
                return (iova, DmaAccess.Read);
            case "root-reserved-low":
                b.LegacyRoot(Rid >> 8, b.AllocFrame(), extraLow: 1UL << 5);
                return (iova, DmaAccess.Read);
            case "context-reserved-low":
                b.LegacyContext(b.ContextTableFor(Rid >> 8, false), Rid & 0xFF, VtdBench.LegacyContextLow(b.AllocFrame()) | (1UL << 4), VtdBench.LegacyContextHigh(2, 1));
                return (iova, DmaAccess.Read);
            case "context-reserved-high":
                b.LegacyContext(b.ContextTableFor(Rid >> 8, false), Rid & 0xFF, VtdBench.LegacyContextLow(b.AllocFrame()), VtdBench.LegacyContextHigh(2, 1) | (1UL << 100 - 64));
                return (iova, DmaAccess.Read);
            case "pte-bit-62":
                b.Map(b.SetupLegacyDevice(Rid, 2, 1), 4, iova, 0x9000, extraLeafBits: 1UL << 62);
                return (iova, DmaAccess.Read);
            case "pte-snp-without-sc":
                b.Map(b.SetupLegacyDevice(Rid, 2, 1), 4, iova, 0x9000, extraLeafBits: 1UL << 11);
                return (iova, DmaAccess.Read);
            case "pml4e-ps":
            {
                ulong sl = b.SetupLegacyDevice(Rid, 2, 1);
                b.Map(sl, 4, iova, 0x9000);
                ulong e = b.EntryAddress(sl, 4, iova, 4);
                b.Memory.WriteUInt64(e, b.Memory.ReadUInt64(e) | (1UL << 7));
                return (iova, DmaAccess.Read);
            }

            case "pde-2m-unaligned":
                b.Map(b.SetupLegacyDevice(Rid, 2, 1), 4, 0x20_0000, 0x40_1000, leafLevel: 2);
                return (0x20_0000, DmaAccess.Read);
            case "pte-beyond-haw":
                b.Map(b.SetupLegacyDevice(Rid, 2, 1), 4, iova, 1UL << 46);
                return (iova, DmaAccess.Read);
            case "output-in-interrupt-range":
                b.Map(b.SetupLegacyDevice(Rid, 2, 1), 4, iova, 0xFEE0_0000);
                return (iova, DmaAccess.Write);
            default:
                throw new ArgumentOutOfRangeException(nameof(scenario));
        }
    }

    [Theory]
    [MemberData(nameof(LegacyCases))]
    public void Legacy_fault_is_returned_and_recorded_with_its_reason(string scenario, int reason)
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.Enable(scalable: false);
        (ulong iova, DmaAccess access) = SetUpLegacy(b, scenario);

        VtdTranslation t = b.Unit.Translate(Rid, null, iova + 0x10, 4, access);

        Assert.True(t.IsFault);
        Assert.Equal((VtdFaultReason)reason, t.Reason);
        Assert.True(t.FaultRecorded);
        Assert.Equal(2u, b.Fsts); // PPF, FRI = 0
        (ulong lo, ulong hi) = b.FaultRecord(0);
        Assert.Equal(iova, lo);
        ulong expected = Rid | ((ulong)reason << 32) | (access == DmaAccess.Read ? 1UL << 62 : 0) | (1UL << 63);
        Assert.Equal(expected, hi);
        FaultReasonTextTests.AssertPrintsRecordedCode(hi, t.Reason);
    }

    [Theory]
    [MemberData(nameof(LegacyCases))]
    public void Fpd_suppresses_exactly_the_qualified_faults(string scenario, int reason)
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.Enable(scalable: false);
        (ulong iova, DmaAccess access) = SetUpLegacy(b, scenario);
        // Set FPD in whatever context entry the scenario left (present or not).
        ulong ctxTable = b.Memory.ReadUInt64(b.RootTable + ((ulong)(Rid >> 8) * 16)) & ~0xFFFUL;
        bool contextReachable = ctxTable != 0 && ctxTable < VtdBench.MemorySize && (b.Memory.ReadUInt64(b.RootTable + ((ulong)(Rid >> 8) * 16)) & 0xFFE) == 0;
        if (contextReachable)
        {
            ulong slot = ctxTable + ((ulong)(Rid & 0xFF) * 16);
            b.Memory.WriteUInt64(slot, b.Memory.ReadUInt64(slot) | 2);
        }

        VtdTranslation t = b.Unit.Translate(Rid, null, iova, 4, access);

        Assert.True(t.IsFault);
        bool qualified = reason is not (0x1 or 0x8 or 0x9 or 0xA or 0xB);
        Assert.Equal(qualified && contextReachable, !t.FaultRecorded);
        Assert.Equal(t.FaultRecorded ? 2u : 0u, b.Fsts);
        Assert.Equal(qualified, VtdUnit.IsQualified((VtdFaultReason)reason));
    }

    [Fact]
    public void Single_record_overflows_into_pfo_and_clearing_f_clears_ppf()
    {
        using var b = new VtdBench(VtdConfig.Legacy39Bit);
        b.Enable(scalable: false);
        b.SetupLegacyDevice(Rid, 1, 1);

        Assert.True(b.Unit.Translate(Rid, null, 0x1000, 4, DmaAccess.Read).FaultRecorded);
        VtdTranslation second = b.Unit.Translate(Rid, null, 0x2000, 4, DmaAccess.Write);
        Assert.True(second.IsFault);
        Assert.False(second.FaultRecorded);
        Assert.Equal(3u, b.Fsts); // PFO | PPF
        Assert.Equal(0x1000UL, b.FaultRecord(0).Lo);

        b.ClearFaultRecord(0);
        Assert.Equal(1u, b.Fsts); // PPF gone, PFO stays until cleared
        Assert.False(b.Unit.Translate(Rid, null, 0x3000, 4, DmaAccess.Read).FaultRecorded); // PFO blocks logging
        b.Unit.Write32(0x34, 1);
        Assert.Equal(0u, b.Fsts);
        Assert.True(b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read).FaultRecorded);
        Assert.Equal(0x4000UL, b.FaultRecord(0).Lo);
    }

    [Fact]
    public void Records_fill_in_order_fri_points_at_the_first_pending_one()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit); // 8 records
        b.Enable(scalable: false);
        b.SetupLegacyDevice(Rid, 2, 1);
        for (ulong i = 0; i < 8; i++)
        {
            Assert.True(b.Unit.Translate(Rid, null, (i + 1) << 12, 4, DmaAccess.Read).FaultRecorded);
        }

        Assert.False(b.Unit.Translate(Rid, null, 0x9000, 4, DmaAccess.Read).FaultRecorded);
        Assert.Equal(3u, b.Fsts);
        for (int i = 0; i < 8; i++)
        {
            Assert.Equal((ulong)(i + 1) << 12, b.FaultRecord(i).Lo);
        }

        b.ClearFaultRecord(0);
        Assert.Equal(1u << 8 | 3u, b.Fsts); // FRI = 1
        for (int i = 1; i < 8; i++)
        {
            b.ClearFaultRecord(i);
        }

        Assert.Equal(1u, b.Fsts & 0xFF); // FRI is meaningful only while PPF is set
        // The internal index wrapped to record 0.
        b.Unit.Write32(0x34, 1);
        Assert.True(b.Unit.Translate(Rid, null, 0xA000, 4, DmaAccess.Read).FaultRecorded);
        Assert.Equal(0xA000UL, b.FaultRecord(0).Lo);
        Assert.Equal(2u, b.Fsts);
    }

    [Fact]
    public void Fsts_fri_mask_and_shift_give_the_index_of_the_first_pending_record()
    {
        // A guest's fault handler: record = FRCD base + ((FSTS & FRI mask) >> FRI shift) * 16.
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.Enable(scalable: false);
        b.SetupLegacyDevice(Rid, 2, 1);
        Assert.True(b.Unit.Translate(Rid, null, 0x1000, 4, DmaAccess.Read).FaultRecorded);
        Assert.True(b.Unit.Translate(Rid, null, 0x2000, 4, DmaAccess.Read).FaultRecorded);
        b.ClearFaultRecord(0);

        uint fsts = b.Unit.Read32(VtdRegister.Fsts);
        Assert.Equal(0xFF00u, VtdRegister.FstsFriMask);
        Assert.Equal(1u, (fsts & VtdRegister.FstsFriMask) >> VtdRegister.FstsFriShift);
        Assert.Equal(VtdRegister.FstsPpf, fsts & ~VtdRegister.FstsFriMask);   // nothing else in FSTS is set
        Assert.Equal(0x2000UL, b.FaultRecord(1).Lo);
    }

    [Fact]
    public void An_interrupt_message_prints_its_address_and_data()
    {
        // An emulator logs the MSIs it queues; the default ToString printed only the type name.
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        var events = new List<VtdInterruptEventArgs>();
        b.Unit.FaultEvent += (_, e) => events.Add(e);
        b.Unit.Write32(VtdRegister.Fedata, 0x4021);
        b.Unit.Write32(VtdRegister.Feaddr, 0xFEE0_1000);
        b.Unit.Write32(VtdRegister.Feuaddr, 0x1);
        b.Unit.Write32(VtdRegister.Fectl, 0);
        b.Enable(scalable: false);

        b.Unit.Translate(Rid, null, 0x1000, 4, DmaAccess.Read);   // root entry not present

        VtdInterruptEventArgs msi = Assert.Single(events);
        Assert.Equal("MSI address 0x1fee01000, data 0x4021", msi.ToString());
        Assert.Equal("MSI address 0xfee00000, data 0x0", new VtdInterruptEventArgs(0xFEE0_0000, 0).ToString());
    }

    [Fact]
    public void Activity_prints_its_faults_by_reason()
    {
        // A log line: the record's default ToString printed the dictionary's type name.
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.Enable(scalable: false);
        b.Unit.Translate(Rid, null, 0x1000, 4, DmaAccess.Read);   // root entry not present
        b.Unit.Translate(Rid, null, 0x2000, 4, DmaAccess.Read);

        string text = b.Unit.Activity.ToString();
        Assert.Contains("Faults = 2, FaultsByReason = [ RootEntryNotPresent: 2 ]", text, StringComparison.Ordinal);
        Assert.StartsWith("VtdActivity { ContextInvalidations = ", text, StringComparison.Ordinal);
        Assert.Equal("VtdActivity { ContextInvalidations = 0, PasidInvalidations = 0, IotlbInvalidations = 0, Faults = 0, FaultsByReason = [] }",
            new VtdActivity(0, 0, 0, new Dictionary<VtdFaultReason, long>()).ToString());
    }

    [Fact]
    public void Fault_event_is_sent_with_feaddr_and_fedata_once_per_pending_period()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        var events = new List<VtdInterruptEventArgs>();
        b.Unit.FaultEvent += (_, e) => events.Add(e);
        b.Unit.Write32(0x3C, 0x4021);
        b.Unit.Write32(0x40, 0xFEE0_1000);
        b.Unit.Write32(0x44, 0x1);
        b.Unit.Write32(0x38, 0); // unmask
        b.Enable(scalable: false);
        b.SetupLegacyDevice(Rid, 2, 1);

        b.Unit.Translate(Rid, null, 0x1000, 4, DmaAccess.Read);
        b.Unit.Translate(Rid, null, 0x2000, 4, DmaAccess.Read);
        Assert.Single(events);
        Assert.Equal(0x1_FEE0_1000UL, events[0].Address);
        Assert.Equal(0x4021u, events[0].Data);

        b.ClearFaultRecord(0);
        b.ClearFaultRecord(1);
        b.Unit.Translate(Rid, null, 0x3000, 4, DmaAccess.Read);
        Assert.Equal(2, events.Count);
    }

    [Fact]
    public void Masked_fault_event_stays_pending_until_unmasked()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        int events = 0;
        b.Unit.FaultEvent += (_, _) => events++;
        b.Enable(scalable: false);
        b.SetupLegacyDevice(Rid, 2, 1);
        b.Unit.Translate(Rid, null, 0x1000, 4, DmaAccess.Read);
        Assert.Equal(0, events);
        Assert.Equal(0xC000_0000u, b.Unit.Read32(0x38)); // IM | IP
        b.Unit.Write32(0x38, 0);
        Assert.Equal(1, events);
        Assert.Equal(0u, b.Unit.Read32(0x38));
    }
}
