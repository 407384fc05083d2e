using Iommu.Devices;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;
using static Iommu.VtD.Tests.Hardware.Infrastructure.FirstStageRig;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// ATS translation requests (pasid-sva.md §1.2, §1.5) and the device's ATC: reduced permissions instead of
/// faults, DTE = 0 → 0x44, ATC fill and hit, and device-TLB invalidations of types 3 and 8 (§1.7 size encoding).
/// </summary>
public class AtsTranslationTests
{
    private const uint Pasid = 5;
    private const ushort Did = 9;
    private const ulong Iova = 0x7F00_0000_2000;

    private static AtsRig Rig(bool dte = true)
    {
        var r = new AtsRig(dte: dte);
        r.Fl.Entry(Pasid, Did);
        r.Fl.Entry(Pasid + 1, Did);
        return r;
    }

    [Fact]
    public void A_read_only_page_completes_with_read_and_no_write_and_records_no_fault()
    {
        using AtsRig r = Rig();
        ulong leaf = r.Fl.Map(Iova, 0x0055_5000, leaf: P | US);
        AtsCompletion c = r.Unit.TranslationRequest(r.Dev, Pasid, Iova + 0x123, write: true);
        Assert.Equal(new AtsCompletion(true, 0x0055_5000, 4096, true, false, DmaFaultReason.None), c);
        Assert.Equal(0u, r.B.Fsts & 3);
        Assert.Equal(0UL, r.Fl.Read(leaf) & D);

        // A read request never grants write, even on a writable page, and leaves D clear.
        ulong rw = r.Fl.Map(Iova + 0x1000, 0x0056_6000);
        Assert.Equal(new AtsCompletion(true, 0x0056_6000, 4096, true, false, DmaFaultReason.None), r.Unit.TranslationRequest(r.Dev, Pasid, Iova + 0x1000, write: false));
        Assert.Equal(A, r.Fl.Read(rw) & (A | D));
        Assert.Equal(new AtsCompletion(true, 0x0056_6000, 4096, true, true, DmaFaultReason.None), r.Unit.TranslationRequest(r.Dev, Pasid, Iova + 0x1000, write: true));
        Assert.Equal(A | D, r.Fl.Read(rw) & (A | D));
    }

    [Fact]
    public void Not_present_and_supervisor_only_pages_complete_with_nothing_granted_and_no_fault()
    {
        using AtsRig r = Rig();
        r.Fl.Map(Iova + 0x1000, 0x0055_5000, leaf: P | RW);
        Assert.Equal(new AtsCompletion(true, 0, 4096, false, false, DmaFaultReason.None), r.Unit.TranslationRequest(r.Dev, Pasid, Iova, write: false));
        Assert.Equal(new AtsCompletion(true, 0, 4096, false, false, DmaFaultReason.None), r.Unit.TranslationRequest(r.Dev, Pasid, Iova + 0x1000, write: true));
        Assert.Equal(0u, r.B.Fsts & 3);

        // The same pages fault for untranslated requests.
        Assert.Equal(VtdFaultReason.FirstLevelNotPresent, r.Fl.Translate(Pasid, Iova).Reason);
    }

    [Fact]
    public void Dte_clear_is_fault_0x44_and_other_structure_faults_stay_faults()
    {
        using (AtsRig r = Rig(dte: false))
        {
            AtsCompletion c = r.Unit.TranslationRequest(r.Dev, Pasid, Iova, write: false);
            Assert.False(c.Success);
            Assert.Equal(0x44, c.FaultReason.Code);
            Assert.Equal(0x44UL, (r.B.FaultRecord(0).Hi >> 32) & 0xFF);
        }

        using (AtsRig r = Rig())
        {
            // PASID entry not present: 0x59, recorded; non-canonical address: 0x80, recorded.
            Assert.Equal(0x59, r.Unit.TranslationRequest(r.Dev, Pasid + 2, Iova, write: false).FaultReason.Code);
            Assert.Equal(0x80, r.Unit.TranslationRequest(r.Dev, Pasid, 0x8000_0000_0000, write: false).FaultReason.Code);
            Assert.Equal(0x59UL, (r.B.FaultRecord(0).Hi >> 32) & 0xFF);
            Assert.Equal(0x80UL, (r.B.FaultRecord(1).Hi >> 32) & 0xFF);
        }
    }

    [Fact]
    public void The_atc_fills_then_serves_translated_requests_unchecked_until_a_type_8_invalidation()
    {
        using AtsRig r = Rig();
        ulong leaf = r.Fl.Map(Iova, 0x0055_5000);
        r.B.Memory.WriteUInt64(0x0055_5000, 0xAAAA);
        r.B.Memory.WriteUInt64(0x0066_6000, 0xBBBB);
        byte[] buf = new byte[8];
        Assert.True(r.Dev.AtsDmaRead(Pasid, Iova, buf).IsOk);
        Assert.Equal(0xAAAAUL, BitConverter.ToUInt64(buf));
        Assert.Equal(1, r.Dev.AtcCount);

        // The tables change without a device-TLB flush: the ATC still reaches the old page.
        r.Fl.Set(leaf, 0x0066_6000 | P | RW | US);
        r.B.Submit(6 | (3UL << 4) | ((ulong)Did << 16) | ((ulong)Pasid << 32), Iova);
        Assert.True(r.Dev.AtsDmaRead(Pasid, Iova, buf).IsOk);
        Assert.Equal(0xAAAAUL, BitConverter.ToUInt64(buf));

        // Another PASID's flush leaves it; this PASID's flush (S = 0, one page) drops it.
        r.FlushPasidDevTlb(Pasid + 1, Iova, 0);
        Assert.Equal(1, r.Dev.AtcCount);
        r.FlushPasidDevTlb(Pasid, Iova, 0);
        Assert.Equal(0, r.Dev.AtcCount);
        Assert.True(r.Dev.AtsDmaRead(Pasid, Iova, buf).IsOk);
        Assert.Equal(0xBBBBUL, BitConverter.ToUInt64(buf));
    }

    [Fact]
    public void A_write_through_a_read_only_atc_entry_asks_again()
    {
        using AtsRig r = Rig();
        ulong leaf = r.Fl.Map(Iova, 0x0055_5000);
        Assert.True(r.Dev.AtsDmaRead(Pasid, Iova, new byte[8]).IsOk);
        Assert.True(r.Dev.AtsDmaWrite(Pasid, Iova, BitConverter.GetBytes(0x1234UL)).IsOk);
        Assert.Equal(0x1234UL, r.B.Memory.ReadUInt64(0x0055_5000));
        Assert.Equal(D, r.Fl.Read(leaf) & D);
    }

    [Theory]
    [InlineData(0, 0x7F00_0000_2000UL, 0x1000UL)]
    [InlineData(1, 0x7F00_0000_2000UL, 0x2000UL)]
    [InlineData(2, 0x7F00_0000_0000UL, 0x4000UL)]
    [InlineData(4, 0x7F00_0000_0000UL, 0x10000UL)]
    public void Type_8_size_encoding_drops_exactly_the_aligned_range(int order, ulong start, ulong size)
    {
        using AtsRig r = Rig();
        ulong[] pages = [.. Enumerable.Range(-4, 24).Select(i => (ulong)((long)0x7F00_0000_0000 + (i * 0x1000L)))];
        foreach (ulong p in pages)
        {
            r.Fl.Map(p, 0x0055_5000);
            Assert.True(r.Dev.AtsDmaRead(Pasid, p, new byte[8]).IsOk);
        }

        Assert.Equal(pages.Length, r.Dev.AtcCount);

        // qi_flush_dev_iotlb_pasid for 2^order pages at Iova (Linux aligns the address down to the size).
        r.FlushPasidDevTlb(Pasid, Iova & ~((0x1000UL << order) - 1), order);
        Assert.Equal(pages.Length - (int)(size / 0x1000), r.Dev.AtcCount);
        // Remap every page and flush the unit's IOTLB: dropped pages now reach the new page, kept ones the old.
        r.B.Memory.WriteUInt64(0x0055_5000, 0xAAAA);
        r.B.Memory.WriteUInt64(0x0066_6000, 0xBBBB);
        foreach (ulong p in pages)
        {
            r.Fl.Map(p, 0x0066_6000);
        }

        r.B.Submit(6 | (2UL << 4) | ((ulong)Did << 16) | ((ulong)Pasid << 32));
        foreach (ulong p in pages)
        {
            byte[] buf = new byte[8];
            Assert.True(r.Dev.AtsDmaRead(Pasid, p, buf).IsOk);
            bool dropped = p >= start && p < start + size;
            Assert.Equal(dropped ? 0xBBBBUL : 0xAAAAUL, BitConverter.ToUInt64(buf));
        }
    }

    [Fact]
    public void Type_3_drops_the_range_for_every_pasid_and_g_1_type_8_too()
    {
        using AtsRig r = Rig();
        r.Fl.Map(Iova, 0x0055_5000);
        r.Fl.Map(Iova + 0x1000, 0x0055_6000);
        r.Fl.Map(Iova + 0x2000, 0x0055_7000);
        foreach (uint pasid in new[] { Pasid, Pasid + 1 })
        {
            Assert.True(r.Dev.AtsDmaRead(pasid, Iova, new byte[0x3000]).IsOk);
        }

        Assert.Equal(6, r.Dev.AtcCount);
        r.FlushDevTlb(Iova, 1);
        Assert.Equal(2, r.Dev.AtcCount);
        r.FlushPasidDevTlb(Pasid + 1, Iova + 0x2000, 0, global: true);
        Assert.Equal(0, r.Dev.AtcCount);
    }

    [Fact]
    public void A_large_page_is_cached_whole_and_any_part_of_it_invalidates_it()
    {
        using AtsRig r = Rig();
        r.Fl.Map(0x4000_0000, 0x0060_0000, leafLevel: 2);
        Assert.True(r.Dev.AtsDmaRead(Pasid, 0x4001_0000, new byte[8]).IsOk);
        AtsCompletion c = r.Unit.TranslationRequest(r.Dev, Pasid, 0x4001_0000, write: false);
        Assert.Equal((0x0061_0000UL, 2UL << 20), (c.PhysicalAddress, c.PageSize));
        r.FlushPasidDevTlb(Pasid, 0x401F_F000, 0);
        Assert.Equal(0, r.Dev.AtcCount);
    }

    [Fact]
    public void Without_ats_enabled_the_device_sends_untranslated_requests()
    {
        using AtsRig r = Rig();
        r.Dev.DisableAts();
        DmaResult d = r.Dev.AtsDmaRead(Pasid, Iova, new byte[8]);
        Assert.Equal(DmaStatus.Fault, d.Status);
        Assert.Equal(0x71, d.FaultReason.Code);
        Assert.Equal(0, r.Dev.AtcCount);
    }
}
