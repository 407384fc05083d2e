using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// iommu_attach_device with several things wrong at once: the errno is the one 5.15's first failing
/// check gives (<c>iommu_attach_device</c>, <c>__iommu_attach_group</c>, then
/// <c>intel_iommu_attach_device</c> and <c>prepare_domain_attach_device</c>), and the device keeps its
/// translation unless 5.15 had already detached it when the check failed.
/// </summary>
public sealed class AttachErrnoPrecedencePropertyTests
{
    [Flags]
    private enum Fault
    {
        None = 0,
        NoGroup = 1 << 0,
        SharedGroup = 1 << 1,
        NonDefaultDomain = 1 << 2,
        RmrrLocked = 1 << 3,
        AuxEnabled = 1 << 4,
        MappedBeyondUnit = 1 << 5,
    }

    private const int FaultKinds = 6;
    private const ulong Probe = 0x4000_0000, ProbePa = 0x6000_0000;

    private sealed record Expect(Errno Errno, bool DeviceDetachedFirst, string Check);

    // 5.15's checks in order. The driver detaches the device's RID domain after its EPERM checks and
    // before prepare_domain_attach_device, so a failure there leaves the device attached to nothing.
    private static Expect Reference(Fault faults, DomainType type)
    {
        if (faults.HasFlag(Fault.NoGroup))
        {
            return new(Errno.ENODEV, false, "no IOMMU group");
        }

        if (faults.HasFlag(Fault.SharedGroup))
        {
            return new(Errno.EINVAL, false, "devices");
        }

        if (faults.HasFlag(Fault.NonDefaultDomain))
        {
            return new(Errno.EBUSY, false, "non-default");
        }

        if (type == DomainType.Unmanaged && faults.HasFlag(Fault.RmrrLocked))
        {
            return new(Errno.EPERM, false, "RMRR");
        }

        if (type == DomainType.Unmanaged && faults.HasFlag(Fault.AuxEnabled))
        {
            return new(Errno.EPERM, false, "auxiliary");
        }

        return faults.HasFlag(Fault.MappedBeyondUnit) ? new(Errno.EFAULT, true, "bits wide") : new(Errno.None, true, "");
    }

    [Fact]
    public void AttachErrnoIsTheFirstFailingCheckOf515()
    {
        int seed = Environment.GetEnvironmentVariable("IOMMU_PROPERTY_SEED") is string s ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : Random.Shared.Next();
        var rng = new Random(seed);
        var seen = new HashSet<Errno>();
        for (int i = 0; i < 300; i++)
        {
            int caseSeed = rng.Next();
            string? why = RunCase(caseSeed, seen);
            if (why is not null)
            {
                Assert.Fail($"seed {seed}, case {i} (case seed {caseSeed}): {why}");
            }
        }

        Assert.True(seen.IsSupersetOf([Errno.None, Errno.ENODEV, Errno.EINVAL, Errno.EBUSY, Errno.EPERM, Errno.EFAULT]), $"seed {seed}: errnos seen {string.Join(",", seen)}");
    }

    private static string? RunCase(int caseSeed, HashSet<Errno> seen)
    {
        var rng = new Random(caseSeed);
        using var f = New("Sm48");
        int nFaults = rng.Next(4);
        Fault faults = Fault.None;
        for (int k = 0; k < nFaults; k++)
        {
            faults |= (Fault)(1 << rng.Next(FaultKinds));
        }

        DomainType type = rng.Next(3) == 0 ? DomainType.Dma : DomainType.Unmanaged;
        bool rmrr = faults.HasFlag(Fault.RmrrLocked), aux = faults.HasFlag(Fault.AuxEnabled);
        PciDevice dev;
        if (faults.HasFlag(Fault.NoGroup))
        {
            dev = f.Platform.AddPciBus(segment: 1).AddDevice(new PciDeviceSpec("0001:00:02.0") { RmrrLocked = rmrr, Acs = true });
        }
        else if (faults.HasFlag(Fault.SharedGroup))
        {
            dev = f.Pci.AddDevice(new PciDeviceSpec("0000:00:03.0") { Multifunction = true, PasidWidth = aux ? 20 : 0, ScalableIov = aux, RmrrLocked = rmrr });
            f.Pci.AddDevice(new PciDeviceSpec("0000:00:03.1") { Multifunction = true });
        }
        else
        {
            dev = f.AddDevice("0000:00:02.0", pasidWidth: aux ? 20 : 0, siov: aux, rmrr: rmrr);
        }

        if (aux && dev.IommuGroup is not null)
        {
            Assert.Equal(Errno.None, f.Iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
        }

        if (faults.HasFlag(Fault.NonDefaultDomain) && dev.IommuGroup is IommuGroup g)
        {
            IDomain other = f.Iommu.DomainAllocType(f.Pci, DomainType.Dma)!;
            Assert.Equal(Errno.None, f.Iommu.AttachGroup(other, g));
        }

        IDomain dom = f.Iommu.DomainAllocType(f.Pci, type)!;
        if (faults.HasFlag(Fault.MappedBeyondUnit))
        {
            // A new domain is 57 bits wide until its first attach; the unit walks 48.
            Assert.Equal(Errno.None, f.Iommu.Map(dom, 1UL << 50, ProbePa, K4, RW));
        }

        IDomain? current = dev.IommuGroup is not null ? f.Iommu.GetDomainForDev(dev) : null;
        if (current is not null && current.Type.IsPaging())
        {
            Assert.Equal(Errno.None, f.Iommu.Map(current, Probe, ProbePa, K4, RW));
        }

        Span<byte> b = stackalloc byte[8];
        DmaResult before = dev.DmaRead(null, Probe, b);

        Expect want = Reference(faults, type);
        Errno got = f.Iommu.AttachDevice(dom, dev);
        string? detail = ErrorDetail.LastMessage;
        seen.Add(got);
        string call = $"faults [{faults}] {type} domain, attach to {dev.Name}";
        if (got != want.Errno)
        {
            return $"{call}: got {got}, 5.15 gives {want.Errno} ({want.Check}); detail: {detail}";
        }

        if (got == Errno.None)
        {
            return ReferenceEquals(f.Iommu.GetDomainForDev(dev), dom) ? null : $"{call}: attached, but the group's domain is not the domain";
        }

        if (ErrorDetail.LastErrno != got || detail is null || !detail.Contains(want.Check, StringComparison.OrdinalIgnoreCase))
        {
            return $"{call}: {got} with detail '{detail}', which does not name the check that failed ('{want.Check}')";
        }

        if (dev.IommuGroup is not null && !ReferenceEquals(f.Iommu.GetDomainForDev(dev), current))
        {
            return $"{call}: failed with {got} but the group's domain changed";
        }

        DmaResult after = dev.DmaRead(null, Probe, b);
        if (want.DeviceDetachedFirst)
        {
            return after.Status == DmaStatus.Fault ? null : $"{call}: failed with {got} after 5.15 removed the device's domain, but DMA still translates ({after})";
        }

        return after.Status == before.Status && after.Address == before.Address ? null : $"{call}: failed with {got} before 5.15 touches the device, but DMA changed from {before} to {after}";
    }
}
