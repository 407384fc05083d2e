using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using Vfio.Type1.Tests.Infrastructure;

namespace Vfio.Type1.Tests;

/// <summary>
/// <c>using</c> does what close(2) and exit(2) do: disposing a container, group or device file
/// closes its descriptor, disposing a process exits it; a second Dispose, a Dispose after Close and
/// a Dispose after the platform is gone are harmless.
/// </summary>
public sealed class LifetimeTests
{
    [Fact]
    public void Disposing_container_group_and_device_file_closes_their_descriptors_and_releases_the_backend()
    {
        using var bed = new Type1Bed();
        PciDevice dev = bed.AddDevice("0000:00:03.0");
        int cfd, gfd, dfd;
        VfioContainer container;
        using (VfioContainer c = bed.Vfio.OpenContainer(bed.Proc, out cfd))
        {
            container = c;
            Assert.Equal(Errno.None, bed.Vfio.OpenGroup(bed.Proc, dev.IommuGroup!.Id, out VfioGroup? opened, out gfd));
            using VfioGroup g = opened!;
            g.SetContainer(c).ThrowIfError();
            c.SetIommu(Uapi.VfioUapi.VFIO_TYPE1v2_IOMMU).ThrowIfError();
            Assert.Equal(Errno.None, g.GetDeviceFd(bed.Proc, dev.Name, out VfioDeviceFile? file, out dfd));
            using (file!)
            {
                Assert.True(file!.FileRefs > 0);
            }

            Assert.Equal(0, file.FileRefs);
            Assert.Equal(Errno.EBADF, bed.Proc.Close(dfd));
            Assert.NotNull(c.Backend);
        }

        // The group's close took it out of the container, the container's close dropped the backend.
        Assert.Equal(Errno.EBADF, bed.Proc.Close(gfd));
        Assert.Equal(Errno.EBADF, bed.Proc.Close(cfd));
        Assert.False(container.IsOpen);
        Assert.Null(container.Backend);
        Assert.Same(dev.IommuGroup.DefaultDomain, dev.IommuGroup.Domain);
    }

    [Fact]
    public void A_second_dispose_or_one_after_close_is_harmless_and_leaves_other_files_open()
    {
        using var bed = new Type1Bed();
        VfioContainer first = bed.Vfio.OpenContainer(bed.Proc, out _);
        Assert.Equal(Errno.None, first.Close());
        VfioContainer second = bed.Vfio.OpenContainer(bed.Proc, out _);

        first.Dispose();
        first.Dispose();

        Assert.True(second.IsOpen);
        second.Dispose();
        second.Dispose();
        Assert.False(second.IsOpen);
    }

    [Fact]
    public void Disposing_a_process_exits_it_once_and_dispose_after_the_platform_is_harmless()
    {
        var bed = new Type1Bed();
        var proc = new ProcessAddressSpace(bed.Pages, "guest");
        VfioContainer c = bed.Vfio.OpenContainer(proc, out _);
        using (proc)
        {
            proc.Mmap(Sizes.Page);
        }

        Assert.True(proc.Exited);
        Assert.False(c.IsOpen);
        proc.Dispose();

        VfioContainer other = bed.Vfio.OpenContainer(bed.Proc, out _);
        bed.Dispose();
        Assert.Null(Record.Exception(other.Dispose));
        Assert.Null(Record.Exception(bed.Proc.Dispose));
    }

    // vfio_group_fops_open looks the group up; it took an IOMMU group reference with iommu_group_get_by_id and never
    // dropped it, so every open kept the group alive: after its last device left, the group was never released.
    [Fact]
    public void Opening_a_group_holds_no_iommu_group_reference_after_the_open()
    {
        using var bed = new Type1Bed();
        PciDevice dev = bed.AddDevice("0000:00:03.0");
        Iommu.Groups.IommuGroup group = dev.IommuGroup!;
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(Errno.None, bed.Vfio.OpenGroup(bed.Proc, group.Id, out _, out int fd));
            Assert.Equal(Errno.None, bed.Proc.Close(fd));
        }

        Assert.Equal(Errno.ENOENT, bed.Vfio.OpenGroup(bed.Proc, group.Id + 100, out _, out _));
        bed.Platform.Iommu.ReleaseDevice(dev); // its last device leaves: the group's last reference goes
        Assert.True(group.IsReleased);
        Assert.Null(bed.Platform.Iommu.GroupGetById(group.Id));
    }
}
