using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.FaultInjection;

/// <summary>
/// fail_nth and DID exhaustion over <c>iommu_attach_group</c> of an UNMANAGED domain in scalable mode
/// (PASID directory, PASID table, DID, context entry). The driver's errno is -EBUSY for every
/// failure of <c>dmar_insert_one_dev_info</c> (spec §2.7 step 5). 5.15 detaches the device from its
/// current domain <em>before</em> it can fail (step 3, kept deliberately by the model), and the core
/// does not roll that back; so right after a failure the device is attached to nothing (its DMA
/// faults, its default domain's table memory and DID are released), the core still names the
/// default domain, and the target domain is untouched. Re-attaching the default domain (the core
/// path <c>iommu_detach_group</c> would take) must then give back exactly the state before the call.
/// </summary>
public sealed class GroupAttachFailNthTests(ITestOutputHelper output)
{
    private const ulong Iova = 0x4000_0000;
    private const ulong Pa = 0x3_0000_0000;
    private const ulong Size = 2 * Sizes.MiB;

    private static List<string> Snapshot(FailNthVtdBed bed, PciDevice dev, DmarDomain target, PciDevice other)
    {
        var s = new List<string>();
        bed.Counters(s, target);
        s.Add($"group.domain is default: {ReferenceEquals(dev.IommuGroup!.Domain, dev.IommuGroup.DefaultDomain)}");
        FailNthVtdBed.Leaves("target", target, s);
        bed.Lookups("target", target, Iova, Size, s);
        FailNthVtdBed.Dma("dev", dev, null, [Iova, Iova + Size - Sizes.Page, 0x1000], s);
        FailNthVtdBed.Dma("other", other, null, [Iova, 0x1000], s);
        return s;
    }

    [Fact]
    public void Every_failing_allocation_is_ebusy_leaks_nothing_and_recovers_to_the_same_state()
    {
        using var bed = new FailNthVtdBed(VtdConfig.ScalableMode48Bit, scalable: true);
        PciDevice dev = bed.AddDevice("0000:00:03.0", pasidWidth: 20); // a 2-page PASID directory
        PciDevice other = bed.AddDevice("0000:00:04.0");
        IommuGroup group = dev.IommuGroup!;
        var baseline = new List<string>();
        bed.Counters(baseline);

        // A second user of the target domain, so its DID stays allocated across the failures.
        DmarDomain target = bed.Unmanaged();
        Assert.Equal(Errno.None, bed.Iommu.Map(target, Iova, Pa, Size, IommuProt.Read | IommuProt.Write));
        Assert.Equal(Errno.None, bed.Iommu.AttachDevice(target, other));

        long liveBefore = 0;
        int didsBefore = 0;
        (int failures, Errno final) = FailNthSweep.Run(
            bed.Platform.Frames,
            () =>
            {
                liveBefore = bed.Platform.Frames.LiveFrames;
                didsBefore = bed.Driver.Units[0].DomainIdsInUse;
                return Snapshot(bed, dev, target, other);
            },
            () => bed.Iommu.AttachGroup(target, group),
            (n, err, pre) =>
            {
                Assert.True(err == Errno.EBUSY, $"fail_nth={n}: {err}, expected EBUSY");
                Assert.Same(group.DefaultDomain, group.Domain);
                Assert.False(dev.DmaRead(null, Iova, new byte[8]).IsOk, $"fail_nth={n}: a half-attached device translates");
                Assert.True(bed.Platform.Frames.LiveFrames < liveBefore, $"fail_nth={n}: frames {bed.Platform.Frames.LiveFrames} ≥ {liveBefore}: the failed attach kept table memory");
                Assert.Equal(didsBefore - 1, bed.Driver.Units[0].DomainIdsInUse); // the default domain's DID is released, none taken

                Assert.Equal(Errno.None, bed.Iommu.AttachGroup(group.DefaultDomain!, group));
                FailNthSweep.AssertSame(pre, Snapshot(bed, dev, target, other), $"fail_nth={n} after re-attaching the default domain");
            });
        Assert.Equal(Errno.None, final);
        output.WriteLine($"scalable-mode group attach: {failures} injected allocation failures, each -EBUSY, nothing leaked");
        Assert.True(failures >= 2, $"only {failures} allocations in a scalable-mode attach");

        Span<byte> b = stackalloc byte[8];
        bed.Platform.Memory.WriteUInt64(Pa + 0x80, 0xBEEF);
        Assert.True(dev.DmaRead(null, Iova + 0x80, b).IsOk);
        Assert.Equal(0xBEEFUL, BitConverter.ToUInt64(b));

        bed.Iommu.DetachGroup(target, group);
        bed.Iommu.DetachDevice(target, other);
        bed.Iommu.DomainFree(target);
        var end = new List<string>();
        bed.Counters(end);
        FailNthSweep.AssertSame(baseline, end, "after teardown");
    }

    [Fact]
    public void Did_exhaustion_on_a_normal_attach_is_ebusy()
    {
        // The identity default domain's PASID entries carry FLPT_DEFAULT_DID in scalable mode, but 5.15's
        // domain_attach_iommu gives it a DID of its own all the same (spec §2.4: every domain's first reference on a
        // unit takes the lowest free one), held until its last device leaves: here DID 2, so 3..15 go to new domains.
        using var platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB, DefaultDomainType = DomainType.Identity });
        PciBus pci = platform.AddPciBus();
        var unit = new VtdUnit(platform.Memory, VtdConfig.ScalableMode48Bit with { DomainIdEncoding = 0 });
        pci.AddDmaRemapper(unit, includeAll: true);
        var driver = new IntelIommu(platform, new IntelIommuOptions { ScalableMode = true }, unit);
        pci.SetIommuOps(driver).ThrowIfError();
        var devs = new List<PciDevice>();
        for (int i = 0; i < 16; i++)
        {
            devs.Add(pci.AddDevice(new PciDeviceSpec($"0000:01:{i:x2}.0") { Acs = true }));
        }

        long baseline = platform.Frames.LiveFrames;
        var doms = new List<IDomain>();
        Errno e = Errno.None;
        int attached = 0;
        foreach (PciDevice d in devs)
        {
            IDomain dom = platform.Iommu.DomainAlloc(pci)!;
            doms.Add(dom);
            long live = platform.Frames.LiveFrames;
            e = platform.Iommu.AttachDevice(dom, d);
            if (e != Errno.None)
            {
                Assert.True(platform.Frames.LiveFrames <= live, "the failed attach kept table memory");
                Assert.Same(d.IommuGroup!.DefaultDomain, d.IommuGroup.Domain);
                Assert.Equal(Errno.None, platform.Iommu.AttachGroup(d.IommuGroup.DefaultDomain!, d.IommuGroup));
                Assert.Equal(live, platform.Frames.LiveFrames);
                break;
            }

            attached++;
        }

        Assert.Equal(Errno.EBUSY, e); // spec §2.7 step 5: DID exhaustion surfaces as -EBUSY, not -ENOSPC
        Assert.Equal(13, attached);   // DIDs 0 and 1 are reserved, 2 is the identity domain's
        output.WriteLine($"normal attach: DID exhaustion after {attached} domains is -EBUSY");
        for (int i = 0; i < doms.Count; i++)
        {
            if (i < attached)
            {
                platform.Iommu.DetachDevice(doms[i], devs[i]);
            }

            platform.Iommu.DomainFree(doms[i]);
        }

        Assert.Equal(baseline, platform.Frames.LiveFrames);
        Assert.Equal(3, driver.Units[0].DomainIdsInUse); // 0 and 1 reserved, 2 the identity domain's (its devices are back)
    }
}
