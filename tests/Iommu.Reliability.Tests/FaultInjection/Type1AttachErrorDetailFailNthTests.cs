using Iommu.Devices;
using Iommu.Reliability.Tests.Infrastructure;
using SiovAccel;
using Vfio.Mdev;
using Vfio.Type1;
using Vfio.Type1.Uapi;
using Xunit.Abstractions;

namespace Iommu.Reliability.Tests.FaultInjection;

/// <summary>
/// The detail of a failed type1 attach names the first failure, whatever the unwind (detach, free,
/// unmap of the replay) records or forgets on the way out: fail_nth at every allocation of the
/// attach paths (physical group with replay, the same without interrupt remapping, an SIOV mdev's
/// aux attach), and the uninjected run that fails for want of interrupt remapping.
/// </summary>
public sealed class Type1AttachErrorDetailFailNthTests(ITestOutputHelper output)
{
    [Fact]
    public void A_plain_pci_device_on_a_unit_without_interrupt_remapping_says_why_at_every_failing_allocation()
    {
        // Nothing mapped yet: the first group's attach allocates a domain and programs the device,
        // then finds no interrupt remapping and unwinds (detach back to the default domain, free).
        using var bed = new FailNthType1Bed(new VfioType1Options { AllowUnsafeInterrupts = false, MsiRemap = false }, interruptRemapping: false);
        Assert.Equal(Errno.None, bed.G0.SetContainer(bed.Container));

        var seen = new List<string>();
        (int failures, Errno final) = Sweep(bed, () => bed.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU), seen);

        Assert.Equal(Errno.EPERM, final);
        Assert.Contains("interrupt remapping", seen[^1], StringComparison.Ordinal);
        Assert.Contains("allow_unsafe_interrupts", seen[^1], StringComparison.Ordinal);
        IommuException e = Assert.Throws<IommuException>(() => bed.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU).ThrowIfError());
        Assert.Contains("no interrupt remapping on", e.Message, StringComparison.Ordinal);
        Assert.Contains("AllowUnsafeInterrupts", e.Message, StringComparison.Ordinal);
        output.WriteLine($"attach without interrupt remapping: {failures} injected failures, then -EPERM; messages:\n  {string.Join("\n  ", seen)}");
        Assert.True(failures >= 1, "no allocation in the attach");
    }

    [Fact]
    public void A_group_joining_with_replay_reports_the_failed_allocation_not_the_unwind()
    {
        using var bed = new FailNthType1Bed();
        Assert.Equal(Errno.None, bed.G0.SetContainer(bed.Container));
        Assert.Equal(Errno.None, bed.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        Assert.Equal(Errno.None, bed.Map(bed.Buffer(Sizes.MiB, 0x10), 0x10_0000, Sizes.MiB));
        Assert.Equal(Errno.None, bed.Map(bed.Buffer(2 * Sizes.Page, 0x40), 0x1_0000_0000, 2 * Sizes.Page));

        var seen = new List<string>();
        (int failures, Errno final) = Sweep(bed, () => bed.G1.SetContainer(bed.Container), seen);

        Assert.Equal(Errno.None, final);
        Assert.Null(ErrorDetail.LastMessage); // the successful attach left no detail behind
        output.WriteLine($"attach with replay: {failures} injected failures; messages:\n  {string.Join("\n  ", seen)}");
        Assert.True(failures >= 3, $"only {failures} allocations in the attach");
    }

    [Fact]
    public void An_siov_mdev_aux_attach_with_replay_reports_the_failed_allocation_not_the_unwind()
    {
        using var bed = new FailNthType1Bed(scalableSegment1: true);
        PciDevice parent = bed.Pci1.AddDevice(new PciDeviceSpec("0001:00:02.0") { Acs = true, PasidWidth = 20, ScalableIov = true });
        var mdevCore = new MdevCore(bed.Platform);
        var accel = new SiovAccelDriver(bed.Platform.Iommu, parent, adiCount: 2);
        Assert.Equal(Errno.None, mdevCore.RegisterDevice(parent, accel));
        Assert.Equal(Errno.None, mdevCore.Create(mdevCore.FindParent(parent)!.FindType("siov_accel-wq")!, Guid.NewGuid(), out MdevDevice? adi));
        Assert.Equal(Errno.None, bed.Vfio.RegisterDevice(adi!));
        Assert.Equal(Errno.None, bed.Vfio.OpenGroup(bed.Proc, adi!.IommuGroup!.Id, out VfioGroup? ag, out _));
        Assert.Equal(Errno.None, bed.G0.SetContainer(bed.Container));
        Assert.Equal(Errno.None, bed.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        Assert.Equal(Errno.None, bed.Map(bed.Buffer(Sizes.MiB, 0x10), 0x10_0000, Sizes.MiB));

        var seen = new List<string>();
        (int failures, Errno final) = Sweep(bed, () => ag!.SetContainer(bed.Container), seen);

        Assert.Equal(Errno.None, final);
        output.WriteLine($"aux attach with replay: {failures} injected failures; messages:\n  {string.Join("\n  ", seen)}");
        Assert.True(failures >= 3, $"only {failures} allocations in the aux attach");
        Assert.Equal(Errno.None, ag!.UnsetContainer());
    }

    // fail_nth at every allocation of call; after each injected failure the detail must explain the
    // errno the call returned, by the allocation that failed. The messages (and the final run's) go to seen.
    private static (int Failures, Errno Final) Sweep(FailNthType1Bed bed, Func<Errno> call, List<string> seen)
    {
        string? message = null;
        (int failures, Errno final) = FailNthSweep.Run(
            bed.Platform.Frames,
            () => 0,
            () =>
            {
                Errno e = call();
                message = ErrorDetail.LastErrno == e ? ErrorDetail.LastMessage : null;
                return e;
            },
            (n, err, _) =>
            {
                Assert.True(message is not null, $"fail_nth={n}: {err} with no detail");
                seen.Add($"fail_nth={n}: {err}: {message}");
                string cause = err switch
                {
                    Errno.EIO => "iommu_domain_alloc", // the domain's page-table root
                    Errno.ENOMEM => "no frame left", // a page table of the replay
                    Errno.EBUSY => "no table memory", // a context/PASID table while programming the device
                    _ => throw new Xunit.Sdk.XunitException($"fail_nth={n}: unexpected {err}: {message}"),
                };
                Assert.True(message!.Contains(cause, StringComparison.Ordinal), $"fail_nth={n}: {err} says '{message}', which does not name the failed allocation ('{cause}')");
            });
        seen.Add($"final: {final}: {message}");
        return (failures, final);
    }
}
