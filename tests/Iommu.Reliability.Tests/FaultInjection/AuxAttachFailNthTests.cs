using System.Globalization;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.FaultInjection;

/// <summary>
/// fail_nth and resource exhaustion over <c>iommu_aux_attach_device</c> (spec §2.6): a failed aux
/// attach returns the spec's errno and leaves the PASID namespace, the unit's DIDs, the frames, the
/// domain (no stale default PASID) and every other aux domain's DMA exactly as they were.
/// </summary>
public sealed class AuxAttachFailNthTests(ITestOutputHelper output)
{
    private const ulong DomIova = 0x1000_0000;
    private const ulong DomPa = 0x2_0000_0000;
    private const ulong DomSize = 4 * Sizes.MiB + (3 * Sizes.Page);

    private static List<string> Snapshot(FailNthVtdBed bed, PciDevice parent, IReadOnlyList<DmarDomain> domains)
    {
        var s = new List<string>();
        bed.Counters(s, [.. domains]);
        for (int i = 0; i < domains.Count; i++)
        {
            DmarDomain d = domains[i];
            string name = string.Create(CultureInfo.InvariantCulture, $"dom{i}");
            s.Add(string.Create(CultureInfo.InvariantCulture, $"{name} default_pasid={d.DefaultPasid} dids={d.DidOn(0)}"));
            FailNthVtdBed.Leaves(name, d, s);
            bed.Lookups(name, d, DomIova, DomSize, s);
            uint pasid = d.DefaultPasid;
            FailNthVtdBed.Dma(name, parent, pasid == 0 ? 64u : pasid, FailNthVtdBed.Samples(DomIova, DomSize, Sizes.MiB), s);
        }

        return s;
    }

    private static DmarDomain MappedDomain(FailNthVtdBed bed, ulong pa)
    {
        DmarDomain d = bed.Unmanaged();
        Assert.Equal(Errno.None, bed.Iommu.Map(d, DomIova, pa, DomSize, IommuProt.Read | IommuProt.Write));
        return d;
    }

    [Fact]
    public void A_failing_pasid_table_allocation_is_enodev_and_changes_nothing()
    {
        using var bed = new FailNthVtdBed(VtdConfig.ScalableMode57Bit, scalable: true); // 5 levels: no level drop at attach
        PciDevice parent = bed.AuxParent("0000:00:02.0");
        PciDevice filler = bed.AuxParent("0000:00:05.0");
        var baseline = new List<string>();
        bed.Counters(baseline);

        DmarDomain a = MappedDomain(bed, DomPa);
        Assert.Equal(Errno.None, bed.Iommu.AttachDeviceAux(a, parent)); // PASID 1
        var fillers = new List<DmarDomain>();
        for (int i = 0; i < 62; i++)
        {
            DmarDomain f = bed.Unmanaged();
            Assert.Equal(Errno.None, bed.Iommu.AttachDeviceAux(f, filler)); // PASIDs 2..63
            fillers.Add(f);
        }

        // The next PASID, 64, needs a new PASID table under the parent's directory.
        DmarDomain d = MappedDomain(bed, DomPa + Sizes.GiB);
        (int failures, Errno final) = FailNthSweep.Run(
            bed.Platform.Frames,
            () => Snapshot(bed, parent, [a, d]),
            () => bed.Iommu.AttachDeviceAux(d, parent),
            (n, err, pre) =>
            {
                // Spec §2.6 e: no PASID-table entry (the table allocation failed) → -ENODEV.
                Assert.True(err == Errno.ENODEV, $"fail_nth={n}: {err}, expected ENODEV");
                FailNthSweep.AssertSame(pre, Snapshot(bed, parent, [a, d]), $"fail_nth={n}");
            });
        Assert.Equal(Errno.None, final);
        Assert.Equal(64u, d.DefaultPasid);
        output.WriteLine($"aux attach (PASID 64, new PASID table): {failures} injected allocation failure(s), each -ENODEV with state unchanged");
        Assert.Equal(1, failures);

        Span<byte> b = stackalloc byte[8];
        bed.Platform.Memory.WriteUInt64(DomPa + Sizes.GiB + 0x40, 0xA0C5);
        Assert.True(parent.DmaRead(64, DomIova + 0x40, b).IsOk);
        Assert.Equal(0xA0C5UL, BitConverter.ToUInt64(b));

        // Teardown: everything back except the parent's PASID table for 64..127, which stays in its
        // PASID directory until the parent leaves its RID domain (intel_pasid_free_table), as in the kernel.
        foreach (DmarDomain f in fillers)
        {
            bed.Iommu.DetachDeviceAux(f, filler);
            bed.Iommu.DomainFree(f);
        }

        bed.Iommu.DetachDeviceAux(a, parent);
        bed.Iommu.DetachDeviceAux(d, parent);
        bed.Iommu.DomainFree(a);
        bed.Iommu.DomainFree(d);
        var end = new List<string>();
        bed.Counters(end);
        long baseFrames = long.Parse(baseline[0].AsSpan("frames.live=".Length), CultureInfo.InvariantCulture);
        baseline[0] = string.Create(CultureInfo.InvariantCulture, $"frames.live={baseFrames + 1}");
        FailNthSweep.AssertSame(baseline, end, "after teardown");
    }

    [Fact]
    public void Pasid_exhaustion_is_enodev_and_changes_nothing()
    {
        using var bed = new FailNthVtdBed(VtdConfig.ScalableMode57Bit, scalable: true);
        PciDevice parent = bed.AuxParent("0000:00:02.0", pasidWidth: 2); // PASIDs 1..3
        var baseline = new List<string>();
        bed.Counters(baseline);
        var attached = new List<DmarDomain>();
        for (int i = 0; i < 3; i++)
        {
            DmarDomain x = MappedDomain(bed, DomPa + ((ulong)i * Sizes.GiB));
            Assert.Equal(Errno.None, bed.Iommu.AttachDeviceAux(x, parent));
            attached.Add(x);
        }

        DmarDomain d = MappedDomain(bed, DomPa + (3 * Sizes.GiB));
        List<string> pre = Snapshot(bed, parent, [.. attached, d]);
        Assert.Equal(Errno.ENODEV, bed.Iommu.AttachDeviceAux(d, parent)); // spec §2.6 b: ioasid_alloc fails → -ENODEV
        FailNthSweep.AssertSame(pre, Snapshot(bed, parent, [.. attached, d]), "PASID exhaustion");
        Assert.True(bed.Iommu.AuxGetPasid(d, parent) < 0);

        // A PASID comes free: the same attach works and takes it.
        bed.Iommu.DetachDeviceAux(attached[1], parent);
        Assert.Equal(Errno.None, bed.Iommu.AttachDeviceAux(d, parent));
        Assert.Equal(2, bed.Iommu.AuxGetPasid(d, parent));

        bed.Iommu.DetachDeviceAux(d, parent);
        bed.Iommu.DetachDeviceAux(attached[0], parent);
        bed.Iommu.DetachDeviceAux(attached[2], parent);
        foreach (DmarDomain x in attached.Append(d))
        {
            bed.Iommu.DomainFree(x);
        }

        var end = new List<string>();
        bed.Counters(end);
        FailNthSweep.AssertSame(baseline, end, "after teardown");
    }

    [Fact]
    public void Did_exhaustion_is_enospc_and_changes_nothing()
    {
        // CAP.ND = 0: 16 DIDs; 0 and 1 are reserved in scalable mode, one goes to the parent's default domain.
        using var bed = new FailNthVtdBed(VtdConfig.ScalableMode57Bit with { DomainIdEncoding = 0 }, scalable: true);
        PciDevice parent = bed.AuxParent("0000:00:02.0");
        var baseline = new List<string>();
        bed.Counters(baseline);
        var attached = new List<DmarDomain>();
        Errno e;
        while (true)
        {
            DmarDomain x = MappedDomain(bed, DomPa);
            List<string> pre = Snapshot(bed, parent, [x]);
            e = bed.Iommu.AttachDeviceAux(x, parent);
            if (e != Errno.None)
            {
                // Spec §2.6 d: domain_attach_iommu finds no DID → -ENOSPC; the PASID taken in b is released.
                Assert.Equal(Errno.ENOSPC, e);
                FailNthSweep.AssertSame(pre, Snapshot(bed, parent, [x]), "DID exhaustion");
                Assert.Equal(16, bed.Driver.Units[0].DomainIdsInUse);
                bed.Iommu.DomainFree(x);
                break;
            }

            attached.Add(x);
            Assert.True(attached.Count <= 16, "more aux domains than DIDs");
        }

        Assert.Equal(13, attached.Count);
        output.WriteLine($"DID exhaustion after {attached.Count} aux domains: -ENOSPC, state unchanged");
        foreach (DmarDomain x in attached)
        {
            bed.Iommu.DetachDeviceAux(x, parent);
            bed.Iommu.DomainFree(x);
        }

        var end = new List<string>();
        bed.Counters(end);
        FailNthSweep.AssertSame(baseline, end, "after teardown");
    }
}
