using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

public class ScalableTranslationTests
{
    private const ushort Rid = 0x0418;

    public static TheoryData<int> Widths => [39, 48, 57];

    private static int Aw(int width) => (width - 30) / 9;

    [Theory]
    [MemberData(nameof(Widths))]
    public void Request_without_pasid_uses_rid_pasid_entry(int width)
    {
        using var b = new VtdBench(VtdConfig.ScalableMode57Bit);
        (ulong _, ulong sl) = b.SetupScalableDevice(Rid, pasid: 0, Aw(width), did: 2);
        b.Map(sl, Aw(width) + 2, 0x12_3456_7000 & VtdBench.Ones(width - 1), 0x0055_5000);
        b.Enable(scalable: true);
        VtdTranslation t = b.Unit.Translate(Rid, null, (0x12_3456_7000 & VtdBench.Ones(width - 1)) + 8, 8, DmaAccess.Read);
        Assert.Equal(VtdTranslationStatus.Translated, t.Status);
        Assert.Equal(0x0055_5008UL, t.PhysicalAddress);
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void Request_with_pasid_walks_its_own_entry_with_superpages(int width)
    {
        using var b = new VtdBench(VtdConfig.ScalableMode57Bit);
        (ulong dir, ulong sl) = b.SetupScalableDevice(Rid, pasid: 0x1234, Aw(width), did: 7);
        int levels = Aw(width) + 2;
        b.Map(sl, levels, 0x4000_0000, 0x0060_0000, leafLevel: 2);
        b.Map(sl, levels, 0x8000_0000, 0, leafLevel: 3);
        b.Map(sl, levels, 0x1000, 0x0070_0000);
        b.Enable(scalable: true);
        Assert.Equal(0x0060_1234UL, b.Unit.Translate(Rid, 0x1234, 0x4000_1234, 4, DmaAccess.Write).PhysicalAddress);
        VtdTranslation g = b.Unit.Translate(Rid, 0x1234, 0x8765_4000, 4, DmaAccess.Read);
        Assert.Equal(0x0765_4000UL, g.PhysicalAddress);
        Assert.Equal(1UL << 30, g.PageSize);
        Assert.Equal(0x0070_0010UL, b.Unit.Translate(Rid, 0x1234, 0x1010, 4, DmaAccess.Read).PhysicalAddress);
        // Another PASID of the same device has no entry.
        Assert.Equal(VtdFaultReason.PasidEntryNotPresent, b.Unit.Translate(Rid, 0x1235, 0x1010, 4, DmaAccess.Read).Reason);
        _ = dir;
    }

    [Fact]
    public void Rid_pasid_field_selects_the_entry_for_untagged_requests()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        ulong dir = b.AllocFrame();
        b.ScalableContext(Rid, dir, pdts: 7, ridPasid: 0x99);
        ulong sl = b.AllocFrame();
        b.PasidEntry(dir, 0x99, VtdBench.PasidEntryLow(sl, 2, 2), did: 5);
        b.Map(sl, 4, 0x2000, 0x0080_0000);
        b.Enable(scalable: true);
        Assert.Equal(0x0080_0000UL, b.Unit.Translate(Rid, null, 0x2000, 4, DmaAccess.Read).PhysicalAddress);
    }

    [Fact]
    public void Without_rps_untagged_requests_use_pasid_0()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit with { RidPasidSupport = false });
        (ulong _, ulong sl) = b.SetupScalableDevice(Rid, pasid: 0, 2, did: 5);
        b.Map(sl, 4, 0x2000, 0x0081_0000);
        b.Enable(scalable: true);
        Assert.Equal(0x0081_0000UL, b.Unit.Translate(Rid, null, 0x2000, 4, DmaAccess.Read).PhysicalAddress);
    }

    [Fact]
    public void Pass_through_pasid_entry_gives_identity()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        b.SetupScalableDevice(Rid, pasid: 0, 2, did: 1, pgtt: 4);
        b.Enable(scalable: true);
        VtdTranslation t = b.Unit.Translate(Rid, null, 0x3456_7000, 4, DmaAccess.Write);
        Assert.Equal(0x3456_7000UL, t.PhysicalAddress);
    }

    [Fact]
    public void Upper_half_of_the_root_entry_serves_devfn_128_and_above()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        (ulong _, ulong slLow) = b.SetupScalableDevice(0x0210, 0, 2, did: 1);
        (ulong _, ulong slHigh) = b.SetupScalableDevice(0x0290, 0, 2, did: 2);
        b.Map(slLow, 4, 0x1000, 0x00A0_0000);
        b.Map(slHigh, 4, 0x1000, 0x00B0_0000);
        b.Enable(scalable: true);
        Assert.Equal(0x00A0_0000UL, b.Unit.Translate(0x0210, null, 0x1000, 4, DmaAccess.Read).PhysicalAddress);
        Assert.Equal(0x00B0_0000UL, b.Unit.Translate(0x0290, null, 0x1000, 4, DmaAccess.Read).PhysicalAddress);
    }

    [Fact]
    public void Dma_with_pasid_moves_bytes()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        (ulong _, ulong sl) = b.SetupScalableDevice(Rid, pasid: 5, 2, did: 9);
        b.Map(sl, 4, 0x7000, 0x00C0_3000);
        b.Enable(scalable: true);
        b.Unit.Dma(Rid, 5, 0x7100, [1, 2, 3, 4], DmaAccess.Write);
        Assert.Equal(0x0403_0201u, b.Memory.ReadUInt32(0x00C0_3100));
    }

    public static TheoryData<string, int> ScalableCases => new()
    {
        { "root-table-unreadable", 0x38 },
        { "root-half-not-present", 0x39 },
        { "root-reserved", 0x3A },
        { "context-table-unreadable", 0x40 },
        { "context-not-present", 0x41 },
        { "context-reserved-low", 0x42 },
        { "context-reserved-q2", 0x42 },
        { "pasid-disabled", 0x45 },
        { "pasid-beyond-pdts", 0x46 },
        { "directory-unreadable", 0x50 },
        { "directory-not-present", 0x51 },
        { "directory-reserved", 0x52 },
        { "pasid-table-unreadable", 0x58 },
        { "pasid-entry-not-present", 0x59 },
        { "pasid-entry-reserved", 0x5A },
        { "pgtt-first-level", 0x5B },
        { "pasid-aw-unsupported", 0x5B },
        { "sl-reserved", 0x7A },
        { "slptptr-unreadable", 0x7B },
        { "sl-table-unreadable", 0x78 },
        { "beyond-width", 0x83 },
        { "write-read-only", 0x85 },
        { "read-not-present", 0x86 },
        { "output-interrupt", 0x87 },
    };

    [Theory]
    [MemberData(nameof(ScalableCases))]
    public void Scalable_fault_is_recorded_with_spec_code_and_pasid(string scenario, int reason)
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        const uint pasid = 0x2_042A; // directory index 0x81
        const ulong iova = 0x6000;
        DmaAccess access = DmaAccess.Read;
        ulong dir = b.AllocFrame();
        ulong sl = b.AllocFrame();
        void Standard(int pdts = 7, bool paside = true)
        {
            b.ScalableContext(Rid, dir, pdts, paside);
            b.PasidEntry(dir, pasid, VtdBench.PasidEntryLow(sl, 2, 2), did: 3);
        }

        switch (scenario)
        {
            case "root-table-unreadable":
                b.Unit.Write64(0x20, VtdBench.BeyondMemory | (1UL << 10));
                break;
            case "root-half-not-present":
                b.ContextTableFor(Rid >> 8, scalableUpper: true);
                break;
            case "root-reserved":
                b.Memory.WriteUInt64(b.RootTable + ((ulong)(Rid >> 8) * 16), b.AllocFrame() | 1 | (1UL << 3));
                break;
            case "context-table-unreadable":
                b.Memory.WriteUInt64(b.RootTable + ((ulong)(Rid >> 8) * 16), VtdBench.BeyondMemory | 1);
                break;
            case "context-not-present":
                b.ContextTableFor(Rid >> 8, false);
                break;
            case "context-reserved-low":
                b.ScalableContext(Rid, dir, 7, extraLow: 1UL << 6);
                break;
            case "context-reserved-q2":
                Standard();
                b.Memory.WriteUInt64(b.ContextTableFor(Rid >> 8, false) + ((ulong)(Rid & 0x7F) * 32) + 16, 1);
                break;
            case "pasid-disabled":
                Standard(paside: false);
                break;
            case "pasid-beyond-pdts":
                Standard(pdts: 0); // 128 directory entries → PASIDs below 0x2000
                b.ScalableContext(Rid, dir, 0);
                break;
            case "directory-unreadable":
                b.ScalableContext(Rid, VtdBench.BeyondMemory, 7);
                break;
            case "directory-not-present":
                b.ScalableContext(Rid, dir, 7);
                break;
            case "directory-reserved":
                Standard();
                b.Memory.WriteUInt64(dir + ((pasid >> 6) * 8), b.Memory.ReadUInt64(dir + ((pasid >> 6) * 8)) | (1UL << 4));
                break;
            case "pasid-table-unreadable":
                b.ScalableContext(Rid, dir, 7);
                b.Memory.WriteUInt64(dir + ((pasid >> 6) * 8), VtdBench.BeyondMemory | 1);
                break;
            case "pasid-entry-not-present":
                b.ScalableContext(Rid, dir, 7);
                b.PasidTableFor(dir, pasid);
                break;
            case "pasid-entry-reserved":
                b.ScalableContext(Rid, dir, 7);
                b.PasidEntry(dir, pasid, VtdBench.PasidEntryLow(sl, 2, 2), did: 3, q1Extra: 1UL << 16);
                break;
            case "pgtt-first-level":
                b.ScalableContext(Rid, dir, 7);
                b.PasidEntry(dir, pasid, VtdBench.PasidEntryLow(sl, 2, 1), did: 3);
                break;
            case "pasid-aw-unsupported":
                b.ScalableContext(Rid, dir, 7);
                b.PasidEntry(dir, pasid, VtdBench.PasidEntryLow(sl, 3, 2), did: 3);
                break;
            case "sl-reserved":
                Standard();
                b.Map(sl, 4, iova, 0x9000, extraLeafBits: 1UL << 62);
                break;
            case "slptptr-unreadable":
                b.ScalableContext(Rid, dir, 7);
                b.PasidEntry(dir, pasid, VtdBench.PasidEntryLow(0x3F_FFFF_F000, 2, 2), did: 3);
                break;
            case "sl-table-unreadable":
                Standard();
                b.Memory.WriteUInt64(sl, VtdBench.BeyondMemory | 3);
                break;
            case "beyond-width":
                Standard();
                b.Unit.Write64(0x20, b.RootTable | (1UL << 10));
                b.Gcmd(1u << 30);
                b.Gcmd(1u << 31);
                Assert.Equal(VtdFaultReason.ScalableAddressBeyondWidth, b.Unit.Translate(Rid, pasid, 1UL << 48, 4, access).Reason);
                AssertRecord(b, 1UL << 48, reason, access, pasid);
                return;
            case "write-read-only":
                Standard();
                b.Map(sl, 4, iova, 0x9000, write: false);
                access = DmaAccess.Write;
                break;
            case "read-not-present":
                Standard();
                break;
            case "output-interrupt":
                Standard();
                b.Map(sl, 4, iova, 0xFEE0_0000);
                break;
        }

        if (scenario != "root-table-unreadable")
        {
            b.Unit.Write64(0x20, b.RootTable | (1UL << 10));
        }

        b.Gcmd(1u << 30);
        b.Gcmd(1u << 31);
        VtdTranslation t = b.Unit.Translate(Rid, pasid, iova, 4, access);
        Assert.True(t.IsFault);
        Assert.Equal((VtdFaultReason)reason, t.Reason);
        AssertRecord(b, iova, reason, access, pasid);
        FaultReasonTextTests.AssertPrintsRecordedCode(b.FaultRecord(0).Hi, t.Reason);
    }

    private static void AssertRecord(VtdBench b, ulong iova, int reason, DmaAccess access, uint pasid)
    {
        (ulong lo, ulong hi) = b.FaultRecord(0);
        Assert.Equal(iova, lo);
        ulong expected = Rid | (1UL << 31) | ((ulong)reason << 32) | ((ulong)pasid << 40)
            | (access == DmaAccess.Read ? 1UL << 62 : 0) | (1UL << 63);
        Assert.Equal(expected, hi);
    }

    [Fact]
    public void Untagged_scalable_fault_has_pp_clear()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        b.SetupScalableDevice(Rid, 0, 2, did: 3);
        b.Enable(scalable: true);
        Assert.Equal(VtdFaultReason.ScalableRead, b.Unit.Translate(Rid, null, 0x1000, 4, DmaAccess.Read).Reason);
        Assert.Equal(Rid | (0x86UL << 32) | (1UL << 62) | (1UL << 63), b.FaultRecord(0).Hi);
    }

    [Fact]
    public void Request_with_pasid_in_legacy_mode_faults_0x31()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        b.Enable(scalable: false);
        Assert.Equal(VtdFaultReason.LegacyModePasidRequest, b.Unit.Translate(Rid, 7, 0x1000, 4, DmaAccess.Read).Reason);
    }

    [Fact]
    public void Pasid_entry_fpd_suppresses_qualified_faults_only()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        ulong dir = b.AllocFrame();
        b.ScalableContext(Rid, dir, 7);
        ulong sl = b.AllocFrame();
        b.PasidEntry(dir, 1, VtdBench.PasidEntryLow(sl, 2, 2, fpd: true), did: 3);
        b.PasidEntry(dir, 2, VtdBench.PasidEntryLow(sl, 2, 2, fpd: true), did: 3, q1Extra: 1UL << 17);
        b.Enable(scalable: true);
        VtdTranslation suppressed = b.Unit.Translate(Rid, 1, 0x1000, 4, DmaAccess.Read);
        Assert.Equal(VtdFaultReason.ScalableRead, suppressed.Reason);
        Assert.False(suppressed.FaultRecorded);
        Assert.Equal(0u, b.Fsts);
        Assert.True(b.Unit.Translate(Rid, 2, 0x1000, 4, DmaAccess.Read).FaultRecorded); // reserved bits: not qualified
    }
}
