using Iommu.Devices;
using Iommu.Domains;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// iommu_aux_attach_device with several things wrong at once: the errno is the one 5.15's first failing
/// check gives (<c>intel_iommu_aux_attach_device</c>: <c>is_aux_domain</c>, <c>prepare_domain_attach_device</c>,
/// then <c>aux_domain_add_dev</c>'s PASID allocation), and a failure leaves no PASID taken.
/// </summary>
public sealed class AuxAttachErrnoPrecedencePropertyTests
{
    [Flags]
    private enum Fault
    {
        None = 0,
        AuxNotEnabled = 1 << 0,
        NotUnmanaged = 1 << 1,
        MappedBeyondUnit = 1 << 2,
        NoPasidLeft = 1 << 3,
    }

    private const int FaultKinds = 4;

    // 5.15's checks in order.
    private static (Errno Errno, string Check) Reference(Fault faults)
    {
        if (faults.HasFlag(Fault.AuxNotEnabled) || faults.HasFlag(Fault.NotUnmanaged))
        {
            return (Errno.EPERM, "auxiliary");
        }

        if (faults.HasFlag(Fault.MappedBeyondUnit))
        {
            return (Errno.EFAULT, "bits wide");
        }

        return faults.HasFlag(Fault.NoPasidLeft) ? (Errno.ENODEV, "no free PASID") : (Errno.None, "");
    }

    [Fact]
    public void AuxAttachErrnoIsTheFirstFailingCheckOf515AndAFailureTakesNoPasid()
    {
        int seed = Environment.GetEnvironmentVariable("IOMMU_PROPERTY_SEED") is string s ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : Random.Shared.Next();
        var rng = new Random(seed);
        var seen = new HashSet<Errno>();
        for (int i = 0; i < 200; i++)
        {
            int caseSeed = rng.Next();
            string? why = RunCase(caseSeed, seen);
            if (why is not null)
            {
                Assert.Fail($"seed {seed}, case {i} (case seed {caseSeed}): {why}");
            }
        }

        Assert.True(seen.IsSupersetOf([Errno.None, Errno.EPERM, Errno.EFAULT, Errno.ENODEV]), $"seed {seed}: errnos seen {string.Join(",", seen)}");
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

        // With a 1-bit PASID width the device's aux range is [1, 1]; another device's aux domain takes PASID 1.
        PciDevice dev = f.AddDevice("0000:00:02.0", pasidWidth: faults.HasFlag(Fault.NoPasidLeft) ? 1 : 20, siov: true);
        PciDevice other = f.AuxParent("0000:00:03.0");
        uint nextFree = 1;
        if (faults.HasFlag(Fault.NoPasidLeft))
        {
            Assert.Equal(Errno.None, f.Iommu.AuxAttachDevice(f.Unmanaged(), other));
            nextFree = 2;
        }

        if (!faults.HasFlag(Fault.AuxNotEnabled))
        {
            Assert.Equal(Errno.None, f.Iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
        }

        IDomain dom = f.Iommu.DomainAllocType(f.Pci, faults.HasFlag(Fault.NotUnmanaged) ? DomainType.Dma : DomainType.Unmanaged)!;
        if (faults.HasFlag(Fault.MappedBeyondUnit))
        {
            Assert.Equal(Errno.None, f.Iommu.Map(dom, 1UL << 50, 0x6000_0000, K4, RW));
        }

        (Errno want, string check) = Reference(faults);
        Errno got = f.Iommu.AuxAttachDevice(dom, dev);
        string? detail = ErrorDetail.LastMessage;
        seen.Add(got);
        string call = $"faults [{faults}], aux attach to {dev.Name}";
        if (got != want)
        {
            return $"{call}: got {got}, 5.15 gives {want} ({check}); detail: {detail}";
        }

        if (got == Errno.None)
        {
            int pasid = f.Iommu.AuxGetPasid(dom, dev);
            return pasid == nextFree ? null : $"{call}: attached with PASID {pasid}, the lowest free is {nextFree}";
        }

        if (ErrorDetail.LastErrno != got || detail is null || !detail.Contains(check, StringComparison.OrdinalIgnoreCase))
        {
            return $"{call}: {got} with detail '{detail}', which does not name the check that failed ('{check}')";
        }

        if (f.Iommu.AuxGetPasid(dom, dev) > 0)
        {
            return $"{call}: failed with {got} but the domain has a PASID";
        }

        // No PASID leaked: the next aux attach anywhere gets the lowest free number it got before.
        IDomain probe = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AuxAttachDevice(probe, other));
        int probePasid = f.Iommu.AuxGetPasid(probe, other);
        return probePasid == nextFree ? null : $"{call}: failed with {got}, and the next aux attach got PASID {probePasid}, not {nextFree}";
    }
}
