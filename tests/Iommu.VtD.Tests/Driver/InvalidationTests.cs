using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

public sealed class InvalidationTests
{
    [Theory]
    [MemberData(nameof(Configs), MemberType = typeof(DriverTestKit))]
    public void A_faulting_iova_translates_as_soon_as_it_is_mapped(string config)
    {
        // With caching mode the unit may cache the not-present result; the driver must flush on
        // not-present → present (iotlb_sync_map).
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x20_0000, 0x40_0000, K4, RW));
        f.AssertDma(dev, null, 0x20_0000, 0x40_0000);
        f.AssertDma(dev, null, 0x20_1000, 0);
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x20_1000, 0x50_0000, K4, RW));
        f.AssertDma(dev, null, 0x20_1000, 0x50_0000, "right after map");
        f.AssertDma(dev, null, 0x50_0000, 0);
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x40_0000, 0x80_0000, M2, RW));
        f.AssertDma(dev, null, 0x50_0000, 0x90_0000, "superpage right after map");
    }

    [Theory]
    [MemberData(nameof(ScalableConfigs), MemberType = typeof(DriverTestKit))]
    public void A_pasid_translates_as_soon_as_its_domain_is_aux_attached(string config)
    {
        using DriverBed f = New(config);
        PciDevice parent = f.AuxParent("0000:00:02.0");
        f.AssertDma(parent, 1, 0x1000, 0, "PASID 1 is not programmed yet");
        IDomain a = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.Map(a, 0x1000, 0x9000, K4, RW));
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
        Assert.Equal(1, f.Iommu.AuxGetPasid(a, parent));
        f.AssertDma(parent, 1, 0x1000, 0x9000, "right after aux attach");
        f.Iommu.DetachDeviceAux(a, parent);
        f.AssertDma(parent, 1, 0x1000, 0);
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
        f.AssertDma(parent, 1, 0x1000, 0x9000, "right after re-attach");
    }

    [Theory]
    [MemberData(nameof(Configs), MemberType = typeof(DriverTestKit))]
    public void Unmap_drops_the_iotlb_entries_and_statistics_show_it(string config)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:03.0");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x100_0000, 0x200_0000, 64 * K4, RW));
        for (ulong i = 0; i < 64; i++)
        {
            f.AssertDma(dev, null, 0x100_0000 + (i * K4), 0x200_0000 + (i * K4));
        }

        VtdCacheStatistics warm = f.Unit.Statistics;
        Assert.True(warm.IotlbEntries >= 64, $"IOTLB holds {warm.IotlbEntries} entries");
        f.AssertDma(dev, null, 0x100_0000, 0x200_0000);
        Assert.True(f.Unit.Statistics.IotlbHits > warm.IotlbHits, "a repeated DMA should hit the IOTLB");

        Assert.Equal(64 * K4, f.Iommu.Unmap(dom, 0x100_0000, 64 * K4));
        Assert.True(f.Unit.Statistics.IotlbEntries <= warm.IotlbEntries - 64, "unmap must invalidate the IOTLB entries of the range");
        for (ulong i = 0; i < 64; i += 7)
        {
            f.AssertDma(dev, null, 0x100_0000 + (i * K4), 0, "after unmap");
        }
    }

    [Theory]
    [InlineData("Legacy48", true)]
    [InlineData("Sm48", true)]
    [InlineData("Legacy48NoQi", false)]
    [InlineData("Sm48NoQi", false)]
    public void Queued_invalidation_is_used_exactly_when_the_unit_has_it(string config, bool qi)
    {
        using DriverBed f = New(config);
        Assert.Equal(qi, f.Driver.Units[0].QueuedInvalidation);
        const uint GstsQies = 1u << 26;
        Assert.Equal(qi, (f.Unit.Read32(0x1C) & GstsQies) != 0);
    }

    [Fact]
    public void Scalable_hardware_without_queued_invalidation_runs_in_legacy_mode_end_to_end()
    {
        using DriverBed f = New("Sm48NoQi");
        Assert.False(f.Driver.Units[0].ScalableMode);
        PciDevice dev = f.AddDevice("0000:00:02.0", pasidWidth: 20, siov: true);
        Assert.Equal(Errno.None, f.Iommu.GetDevAttr(dev, IommuDevAttr.AuxdCapability, out bool cap));
        Assert.False(cap);
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, G1, G1, G1, RW));
        f.AssertDma(dev, null, G1 + 0x1234_5678, G1 + 0x1234_5678);
        Assert.Equal(G1, f.Iommu.Unmap(dom, G1, G1));
        f.AssertDma(dev, null, G1 + 0x1234_5678, 0);
    }

    [Theory]
    [InlineData("Legacy39")]
    [InlineData("Legacy48")]
    [InlineData("Legacy48NoQi")]
    [InlineData("Sm48")]
    [InlineData("Sm57Cm")]
    public void Faulting_dma_is_reported_with_source_address_direction_and_reason(string config)
    {
        using DriverBed f = New(config);
        PciDevice dev = f.AddDevice("0000:00:03.2");
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
        Assert.Equal(Errno.None, f.Iommu.Map(dom, 0x10_0000, 0x20_0000, K4, IommuProt.Read));

        DmaResult w = f.Write(dev, null, 0x10_0010, 1); // read-only page
        Assert.Equal(DmaStatus.Fault, w.Status);
        DmarFaultRecord rec = Assert.Single(f.Driver.Faults);
        Assert.Equal(dev.RequesterId, rec.SourceId);
        Assert.Equal(0x10_0000UL, rec.Address);
        Assert.True(rec.Write);
        Assert.Equal(w.FaultReason.ToVtdFaultReason(), rec.Reason);
        Assert.NotEqual(VtdFaultReason.None, rec.Reason);
        Assert.Null(rec.Pasid);

        Span<byte> buf = stackalloc byte[8];
        DmaResult r = dev.DmaRead(null, 0x77_7000, buf);
        Assert.Equal(DmaStatus.Fault, r.Status);
        Assert.Equal(2, f.Driver.Faults.Count);
        DmarFaultRecord rec2 = f.Driver.Faults[1];
        Assert.Equal(0x77_7000UL, rec2.Address);
        Assert.False(rec2.Write);
        Assert.Equal(r.FaultReason.ToVtdFaultReason(), rec2.Reason);
        if (config.StartsWith("Legacy", StringComparison.Ordinal))
        {
            Assert.Equal(VtdFaultReason.Write, rec.Reason);
            Assert.Equal(VtdFaultReason.Read, rec2.Reason);
        }

        // The handler cleared the records: a third fault is recorded too.
        Assert.Equal(DmaStatus.Fault, f.Write(dev, null, 0x88_8000, 1).Status);
        Assert.Equal(3, f.Driver.Faults.Count);
    }

    [Theory]
    [MemberData(nameof(ScalableConfigs), MemberType = typeof(DriverTestKit))]
    public void Aux_dma_faults_carry_the_pasid(string config)
    {
        using DriverBed f = New(config);
        PciDevice parent = f.AuxParent("0000:00:02.0");
        IDomain a = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDeviceAux(a, parent));
        uint pasid = (uint)f.Iommu.AuxGetPasid(a, parent);
        DmaResult w = f.Write(parent, pasid, 0x5000, 1);
        Assert.Equal(DmaStatus.Fault, w.Status);
        DmarFaultRecord rec = Assert.Single(f.Driver.Faults);
        Assert.Equal(parent.RequesterId, rec.SourceId);
        Assert.Equal(pasid, rec.Pasid);
        Assert.Equal(0x5000UL, rec.Address);
        Assert.True(rec.Write);
        Assert.Equal(w.FaultReason.ToVtdFaultReason(), rec.Reason);
    }
}
