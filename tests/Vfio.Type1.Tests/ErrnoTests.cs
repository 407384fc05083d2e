using System.Buffers.Binary;
using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using Vfio.Mdev;
using Vfio.Mdev.Pinning;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>Errnos of spec §4.2–4.10 through the typed API and through raw ioctl bytes.</summary>
public sealed class ErrnoTests : IDisposable
{
    private const ulong I0 = 0x10_0000;
    private readonly Type1Bed _bed = new();
    private readonly PciDevice _dev;

    public ErrnoTests() => _dev = _bed.AddDevice("0000:00:03.0");

    public void Dispose() => _bed.Dispose();

    private static int RawMap(VfioContainer c, uint argsz, uint flags, ulong vaddr, ulong iova, ulong size)
    {
        var b = new byte[32];
        new VfioIommuType1DmaMap(argsz, flags, vaddr, iova, size).Write(b);
        return c.Ioctl(VfioUapi.VFIO_IOMMU_MAP_DMA, b);
    }

    [Fact]
    public void Group_and_container_state_machine_errnos()
    {
        VfioContainer c = _bed.Vfio.OpenContainer(_bed.Proc, out int cfd);
        Assert.Equal(Errno.None, _bed.Vfio.OpenGroup(_bed.Proc, _dev.IommuGroup!.Id, out VfioGroup? g, out _));
        Assert.Equal(Errno.EBUSY, _bed.Vfio.OpenGroup(_bed.Proc, _dev.IommuGroup!.Id, out _, out _));
        Assert.Equal(-(int)Errno.ENOTTY, g!.Ioctl(VfioUapi.VFIO_IOMMU_MAP_DMA, new byte[32]));
        Assert.Equal(-(int)Errno.EINVAL, g.Ioctl(VfioUapi.VFIO_GROUP_GET_STATUS, new byte[] { 4, 0, 0, 0, 0, 0, 0, 0 }));
        Assert.Equal(Errno.EINVAL, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU)); // no group yet
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_GET_INFO, new byte[64])); // no backend
        Assert.Equal(Errno.EINVAL, g.SetContainer(_bed.Proc, -1));
        Assert.Equal(Errno.EBADF, g.SetContainer(_bed.Proc, 999));
        int nullFd = _bed.Proc.InstallFile(new object());
        var raw = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(raw, nullFd);
        Assert.Equal(-(int)Errno.EINVAL, g.Ioctl(VfioUapi.VFIO_GROUP_SET_CONTAINER, raw));
        Assert.Equal(Errno.EINVAL, g.UnsetContainer());
        Assert.Equal(Errno.EINVAL, g.GetDeviceFd(_bed.Proc, _dev.Name, out _, out _)); // no container
        BinaryPrimitives.WriteInt32LittleEndian(raw, cfd);
        Assert.Equal(0, g.Ioctl(VfioUapi.VFIO_GROUP_SET_CONTAINER, raw));
        Assert.Equal(Errno.EINVAL, g.SetContainer(c)); // already in a container
        Assert.Equal(Errno.ENODEV, c.SetIommu(42));
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_UNMAP_ALL));
        Assert.Equal(Errno.EINVAL, c.SetIommu(VfioUapi.VFIO_TYPE1_NESTING_IOMMU));
        Assert.Null(c.Backend); // still usable
        Assert.Equal(0, c.Ioctl(VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU));
        Assert.Equal(Errno.EINVAL, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU)); // backend already set
        Assert.Equal(-(int)Errno.ENOTTY, c.Ioctl(0x3b99, new byte[64]));
        Assert.Equal(Errno.ENODEV, g.GetDeviceFd(_bed.Proc, "0000:00:1f.0", out _, out _));
        Assert.Equal(Errno.None, g.GetDeviceFd(_bed.Proc, _dev.Name, out VfioDeviceFile? d, out _));
        Assert.Equal(-(int)Errno.EBUSY, g.Ioctl(VfioUapi.VFIO_GROUP_UNSET_CONTAINER, Span<byte>.Empty));
        Assert.Equal(Errno.None, g.Close());
        Assert.Equal(Errno.EBUSY, _bed.Vfio.OpenGroup(_bed.Proc, _dev.IommuGroup.Id, out _, out _)); // still in the container via the device fd
        Assert.NotNull(c.Backend);
        Assert.Equal(Errno.None, d!.Close());
        Assert.Null(c.Backend); // last user gone: group detached, backend released
        Assert.Equal(Errno.None, _bed.Vfio.OpenGroup(_bed.Proc, _dev.IommuGroup.Id, out _, out _));
    }

    // The device's group open in a container with a TYPE1v2 backend.
    private (VfioContainer Container, VfioGroup Group) GroupInTypeOneContainer()
    {
        VfioContainer c = _bed.Vfio.OpenContainer(_bed.Proc, out _);
        _bed.Vfio.OpenGroup(_bed.Proc, _dev.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        g!.SetContainer(c).ThrowIfError();
        c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU).ThrowIfError();
        return (c, g);
    }

    // A backend fetched before the container's last group left (an ioctl racing UNSET_CONTAINER) is
    // released: MAP_DMA and UNMAP_DMA through it are -EINVAL, as 5.15 answers an ioctl that finds no
    // driver (group_lock orders the two there), and nothing is pinned or counted.
    [Fact]
    public void Map_and_unmap_through_a_released_backend_are_einval()
    {
        (VfioContainer c, VfioGroup g) = GroupInTypeOneContainer();
        VfioIommuType1 stale = c.Backend!;
        ulong buf = _bed.Buffer(Sizes.Page);
        Assert.Equal(Errno.None, g.UnsetContainer());
        Assert.Null(c.Backend);

        var map = new byte[32];
        new VfioIommuType1DmaMap(32, 3, buf, I0, Sizes.Page).Write(map);
        Assert.Equal(-(int)Errno.EINVAL, stale.Ioctl(_bed.Proc, VfioUapi.VFIO_IOMMU_MAP_DMA, map));
        Assert.Contains("released", ErrorDetail.LastMessage, StringComparison.Ordinal);
        var unmap = new byte[24];
        new VfioIommuType1DmaUnmap(24, 0, I0, Sizes.Page).Write(unmap);
        Assert.Equal(-(int)Errno.EINVAL, stale.Ioctl(_bed.Proc, VfioUapi.VFIO_IOMMU_UNMAP_DMA, unmap));
        Assert.Empty(stale.Mappings);
        Assert.Equal(0, _bed.Proc.LockedVm);
    }

    // GET_DEVICE_FD for a caller that has exited (or exits meanwhile) throws as installing the fd does,
    // and leaves nothing behind: before, the container user it had taken stayed, so the group could
    // never leave its container again (UNSET_CONTAINER -EBUSY forever).
    [Fact]
    public void Get_device_fd_into_an_exited_process_throws_and_takes_no_container_user()
    {
        (_, VfioGroup g) = GroupInTypeOneContainer();
        var gone = new ProcessAddressSpace(_bed.Pages, "gone");
        gone.Exit();

        Assert.Throws<InvalidOperationException>(() => g.GetDeviceFd(gone, _dev.Name, out _, out _));
        Assert.Equal(Errno.None, g.UnsetContainer());
    }

    [Fact]
    public void Attach_without_interrupt_isolation_is_eperm()
    {
        _bed.Vfio.Options.AllowUnsafeInterrupts = false;
        VfioContainer c = _bed.Vfio.OpenContainer(_bed.Proc, out _);
        _bed.Vfio.OpenGroup(_bed.Proc, _dev.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        g!.SetContainer(c).ThrowIfError();
        Assert.Equal(Errno.EPERM, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        Assert.Equal(-(int)Errno.EPERM, c.Ioctl(VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU));
        _bed.Vfio.Options.MsiRemap = true;
        Assert.Equal(Errno.None, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
    }

    [Fact]
    public void Map_errnos_typed_and_raw()
    {
        (VfioContainer c, _) = _bed.Std(_dev);
        ulong buf = _bed.Buffer(0x4000);
        ulong ro = _bed.Buffer(0x1000, prot: VmProt.Read);
        Assert.Equal(Errno.EINVAL, c.MapDma(new VfioIommuType1DmaMap(32, 0, buf, I0, 0x1000)));
        Assert.Equal(-(int)Errno.EINVAL, RawMap(c, 31, 3, buf, I0, 0x1000));
        Assert.Equal(-(int)Errno.EINVAL, RawMap(c, 32, 0x8, buf, I0, 0x1000));
        Assert.Equal(Errno.EINVAL, c.MapDma(Type1Bed.Map(buf, I0 + 0x800, 0x1000)));
        Assert.Equal(-(int)Errno.EINVAL, RawMap(c, 32, 3, buf, 0xFFFF_FFFF_FFFF_F000, 0x2000));
        Assert.Equal(-(int)Errno.EINVAL, RawMap(c, 32, 3, buf, 0xFEE0_0000, 0x1000)); // MSI window
        Assert.Equal(-(int)Errno.EFAULT, RawMap(c, 32, 3, 0x2000_0000_0000, I0, 0x1000));
        Assert.Equal(Errno.EFAULT, c.MapDma(Type1Bed.Map(ro, I0, 0x1000, flags: 3))); // write pin of read-only memory
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(ro, I0, 0x1000, flags: 1)));
        Assert.Equal(Errno.EEXIST, c.MapDma(Type1Bed.Map(buf, I0, 0x1000)));
        Assert.Equal(-(int)Errno.ENOENT, RawMap(c, 32, VfioUapi.VFIO_DMA_MAP_FLAG_VADDR, buf, 0x80_0000, 0x1000));
        Assert.Equal(Errno.EINVAL, c.MapDma(new VfioIommuType1DmaMap(32, VfioUapi.VFIO_DMA_MAP_FLAG_VADDR, buf, I0, 0x1000))); // not invalidated

        _bed.Proc.CapIpcLock = false;
        _bed.Proc.RlimitMemlock = 0x2000;
        Assert.Equal(Errno.ENOMEM, c.MapDma(Type1Bed.Map(buf, 0x20_0000, 0x4000)));
        Assert.Equal(1, _bed.Proc.LockedVm); // the failed map left no trace
        Assert.Equal(-(int)Errno.ENOMEM, RawMap(c, 32, 3, buf, 0x20_0000, 0x4000));
        c.Backend!.Audit();
    }

    [Fact]
    public void Dma_entry_limit_is_enospc_and_sampled_at_set_iommu()
    {
        _bed.Vfio.Options.DmaEntryLimit = 1;
        (VfioContainer c, _) = _bed.Std(_dev);
        _bed.Vfio.Options.DmaEntryLimit = 65535;
        ulong buf = _bed.Buffer(0x2000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x1000)));
        Assert.Equal(Errno.ENOSPC, c.MapDma(Type1Bed.Map(buf + 0x1000, I0 + 0x1000, 0x1000)));
        Assert.Equal(-(int)Errno.ENOSPC, RawMap(c, 32, 3, buf, 0xFEE0_0000, 0x1000)); // before the IOVA-range check
        Assert.Equal(0u, c.Backend!.DmaAvail);
        c.Backend.Audit();
    }

    [Fact]
    public void Unmap_info_and_dirty_errnos_typed_and_raw()
    {
        (VfioContainer c, _) = _bed.Std(_dev);
        ulong buf = _bed.Buffer(0x4000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x4000)));
        var u = new VfioIommuType1DmaUnmap(24, 0, I0, 0);
        Assert.Equal(Errno.EINVAL, c.UnmapDma(ref u));
        u = new VfioIommuType1DmaUnmap(24, 0, I0 + 0x1000, 0x1000);
        Assert.Equal(Errno.EINVAL, c.UnmapDma(ref u)); // bisects
        Assert.Equal(0x1000UL, u.Size); // header not copied back on error
        var raw = new byte[24];
        new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL, I0, 0).Write(raw);
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, raw));
        new VfioIommuType1DmaUnmap(23, 0, I0, 0x4000).Write(raw);
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, raw));

        var info = new byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(info, 15);
        Assert.Equal(Errno.EINVAL, c.GetInfo(info));

        Assert.Equal(Errno.EINVAL, c.DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START | VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP));
        Assert.Equal(Errno.EINVAL, c.GetDirtyBitmap(I0, 0x4000, new VfioBitmap(0x1000, 8, _bed.Proc.Mmap(0x1000)))); // tracking off
        Assert.Equal(Errno.None, c.DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START));
        Assert.Equal(Errno.EFAULT, c.GetDirtyBitmap(I0, 0x4000, new VfioBitmap(0x1000, 8, 0)));
        var dirty = new byte[48];
        BinaryPrimitives.WriteUInt32LittleEndian(dirty, 48);
        BinaryPrimitives.WriteUInt32LittleEndian(dirty.AsSpan(4), VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP);
        BinaryPrimitives.WriteUInt64LittleEndian(dirty.AsSpan(8), I0);
        BinaryPrimitives.WriteUInt64LittleEndian(dirty.AsSpan(16), 0x4000);
        BinaryPrimitives.WriteUInt64LittleEndian(dirty.AsSpan(24), 0x1000);
        BinaryPrimitives.WriteUInt64LittleEndian(dirty.AsSpan(32), 8);
        Assert.Equal(-(int)Errno.EFAULT, c.Ioctl(VfioUapi.VFIO_IOMMU_DIRTY_PAGES, dirty)); // NULL data, mapping in range
        u = new VfioIommuType1DmaUnmap(48, VfioUapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, I0, 0x4000, new VfioBitmap(0x1000, 8, 0));
        Assert.Equal(Errno.EFAULT, c.UnmapDma(ref u));
        Assert.Single(c.Backend!.Mappings);
    }

    [Fact]
    public void Dirty_pages_on_a_v1_container_is_eacces()
    {
        (VfioContainer c, _) = _bed.Std(_dev, VfioUapi.VFIO_TYPE1_IOMMU);
        Assert.Equal(Errno.EACCES, c.DirtyPages(0));
        Assert.Equal(-(int)Errno.EACCES, c.Ioctl(VfioUapi.VFIO_IOMMU_DIRTY_PAGES, new byte[8]));
    }
}
