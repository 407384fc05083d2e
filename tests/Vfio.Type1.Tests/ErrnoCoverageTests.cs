using System.Buffers.Binary;
using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Mtty;
using Vfio.Mdev;
using Vfio.Mdev.Pinning;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>
/// The errnos of spec §4.2–4.10 that <see cref="ErrnoTests"/> reaches only one way (typed or raw) or
/// not at all: each through the typed API and through raw ioctl bytes where both exist, and the
/// vendor-side (vfio_pin_pages / notifier) errnos, which have only the typed kernel API.
/// </summary>
public sealed class ErrnoCoverageTests : IDisposable
{
    private const ulong I0 = 0x10_0000;
    private const ulong KernelAddress = 0xffff_8880_0000_0000;
    private readonly Type1Bed _bed = new();
    private readonly PciDevice _dev;

    public ErrnoCoverageTests() => _dev = _bed.AddDevice("0000:00:03.0");

    public void Dispose() => _bed.Dispose();

    private static byte[] Fd(int fd)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(b, fd);
        return b;
    }

    private static byte[] Name(string name) => [.. System.Text.Encoding.UTF8.GetBytes(name), 0];

    private static byte[] Unmap(uint argsz, uint flags, ulong iova, ulong size, VfioBitmap bm = default)
    {
        var b = new byte[48];
        new VfioIommuType1DmaUnmap(argsz, flags, iova, size, bm).Write(b);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), bm.Pgsize);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(32), bm.Size);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(40), bm.Data);
        return b;
    }

    private static byte[] GetBitmap(uint argsz, ulong iova, ulong size, VfioBitmap bm)
    {
        var b = new byte[48];
        BinaryPrimitives.WriteUInt32LittleEndian(b, argsz);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8), iova);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), size);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(24), bm.Pgsize);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(32), bm.Size);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(40), bm.Data);
        return b;
    }

    [Fact]
    public void Group_ioctl_errnos_through_both_entries()
    {
        VfioContainer c = _bed.Vfio.OpenContainer(_bed.Proc, out int cfd);
        _bed.Vfio.OpenGroup(_bed.Proc, _dev.IommuGroup!.Id, out VfioGroup? g, out int gfd).ThrowIfError();

        // SET_CONTAINER: copy fault, bad fd, not a container (the group fd itself), typed and raw.
        Assert.Equal(-(int)Errno.EFAULT, g!.Ioctl(VfioUapi.VFIO_GROUP_SET_CONTAINER, new byte[2]));
        Assert.Equal(-(int)Errno.EBADF, g.Ioctl(VfioUapi.VFIO_GROUP_SET_CONTAINER, Fd(999)));
        Assert.Equal(-(int)Errno.EINVAL, g.Ioctl(VfioUapi.VFIO_GROUP_SET_CONTAINER, Fd(-1)));
        Assert.Equal(Errno.EINVAL, g.SetContainer(_bed.Proc, gfd));
        Assert.Equal(-(int)Errno.EINVAL, g.Ioctl(VfioUapi.VFIO_GROUP_SET_CONTAINER, Fd(gfd)));

        // UNSET / GET_DEVICE_FD without a container.
        Assert.Equal(-(int)Errno.EINVAL, g.Ioctl(VfioUapi.VFIO_GROUP_UNSET_CONTAINER, Span<byte>.Empty));
        Assert.Equal(-(int)Errno.EINVAL, g.Ioctl(VfioUapi.VFIO_GROUP_GET_DEVICE_FD, Name(_dev.Name)));

        // In a container without a backend: GET_DEVICE_FD still -EINVAL (5.15: container checks before the name).
        Assert.Equal(0, g.Ioctl(VfioUapi.VFIO_GROUP_SET_CONTAINER, Fd(cfd)));
        Assert.Equal(-(int)Errno.EINVAL, g.Ioctl(VfioUapi.VFIO_GROUP_SET_CONTAINER, Fd(cfd))); // already in a container
        Assert.Equal(Errno.EINVAL, g.GetDeviceFd(_bed.Proc, "0000:00:1f.0", out _, out _));
        Assert.Equal(-(int)Errno.EINVAL, g.Ioctl(VfioUapi.VFIO_GROUP_GET_DEVICE_FD, Name("0000:00:1f.0")));

        // With a backend: unknown name → -ENODEV; an open device fd → UNSET -EBUSY (typed here, raw in ErrnoTests).
        Assert.Equal(Errno.None, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        Assert.Equal(-(int)Errno.ENODEV, g.Ioctl(VfioUapi.VFIO_GROUP_GET_DEVICE_FD, Name("0000:00:1f.0")));
        int dfd = g.Ioctl(VfioUapi.VFIO_GROUP_GET_DEVICE_FD, Name(_dev.Name));
        Assert.True(dfd >= 0);
        Assert.Equal(Errno.EBUSY, g.UnsetContainer());
        Assert.Equal(Errno.None, _bed.Proc.Close(dfd));
        Assert.Equal(Errno.None, g.UnsetContainer());
        Assert.Equal(Errno.EINVAL, g.UnsetContainer());
    }

    [Fact]
    public void Container_errnos_through_both_entries()
    {
        VfioContainer c = _bed.Vfio.OpenContainer(_bed.Proc, out _);
        ulong buf = _bed.Buffer(0x1000);

        // No group: SET_IOMMU -EINVAL; no backend: every type1 ioctl -EINVAL, typed too.
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU));
        Assert.Equal(Errno.EINVAL, c.MapDma(Type1Bed.Map(buf, I0, 0x1000)));
        var u = new VfioIommuType1DmaUnmap(24, 0, I0, 0x1000);
        Assert.Equal(Errno.EINVAL, c.UnmapDma(ref u));
        Assert.Equal(Errno.EINVAL, c.DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START));
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(0x3b99, new byte[64])); // unknown ioctl before SET_IOMMU

        _bed.Vfio.OpenGroup(_bed.Proc, _dev.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        g!.SetContainer(c).ThrowIfError();
        Assert.Equal(-(int)Errno.ENODEV, c.Ioctl(VfioUapi.VFIO_SET_IOMMU, 42));
        Assert.Equal(Errno.EINVAL, c.SetIommu(VfioUapi.VFIO_UNMAP_ALL));
        Assert.Equal(Errno.EINVAL, c.SetIommu(VfioUapi.VFIO_UPDATE_VADDR)); // 5.15: claimed, then rejected by open()
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1_NESTING_IOMMU));
        Assert.Equal(Errno.None, c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU));
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU)); // backend already set
    }

    [Fact]
    public void Map_errnos_missing_from_one_entry()
    {
        (VfioContainer c, _) = _bed.Std(_dev);
        ulong buf = _bed.Buffer(0x2000);
        var raw = new byte[32];

        Assert.Equal(-(int)Errno.EFAULT, c.Ioctl(VfioUapi.VFIO_IOMMU_MAP_DMA, new byte[16])); // copy fault
        Assert.Equal(Errno.EINVAL, c.MapDma(new VfioIommuType1DmaMap(31, 3, buf, I0, 0x1000)));
        Assert.Equal(Errno.EINVAL, c.MapDma(new VfioIommuType1DmaMap(32, 3 | VfioUapi.VFIO_DMA_MAP_FLAG_VADDR, buf, I0, 0x1000)));
        new VfioIommuType1DmaMap(32, 3 | VfioUapi.VFIO_DMA_MAP_FLAG_VADDR, buf, I0, 0x1000).Write(raw);
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_MAP_DMA, raw));
        new VfioIommuType1DmaMap(32, 3, buf, I0, 0).Write(raw);
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_MAP_DMA, raw)); // size 0
        Assert.Equal(Errno.EINVAL, c.MapDma(Type1Bed.Map(0xFFFF_FFFF_FFFF_F000, I0, 0x2000))); // vaddr wraps
        Assert.Equal(Errno.EINVAL, c.MapDma(Type1Bed.Map(buf, 0x80_0000_0000, 0x1000))); // beyond the 39-bit aperture
        Assert.Equal(Errno.EFAULT, c.MapDma(Type1Bed.Map(KernelAddress, I0, 0x1000)));
        Assert.Equal(Errno.ENOENT, c.MapDma(new VfioIommuType1DmaMap(32, VfioUapi.VFIO_DMA_MAP_FLAG_VADDR, buf, I0, 0x1000)));

        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x2000)));
        new VfioIommuType1DmaMap(32, 3, buf, I0 + 0x1000, 0x1000).Write(raw);
        Assert.Equal(-(int)Errno.EEXIST, c.Ioctl(VfioUapi.VFIO_IOMMU_MAP_DMA, raw));
        new VfioIommuType1DmaMap(32, VfioUapi.VFIO_DMA_MAP_FLAG_VADDR, buf, I0, 0x2000).Write(raw);
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_MAP_DMA, raw)); // VADDR on a valid mapping
        var u = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, I0, 0x2000);
        Assert.Equal(Errno.None, c.UnmapDma(ref u));
        Assert.Equal(Errno.EINVAL, c.MapDma(new VfioIommuType1DmaMap(32, VfioUapi.VFIO_DMA_MAP_FLAG_VADDR, buf, I0, 0x1000))); // size differs
        Assert.Equal(Errno.EEXIST, c.MapDma(Type1Bed.Map(buf, I0, 0x1000))); // over an invalidated mapping
        c.Backend!.Audit();
    }

    [Fact]
    public void Unmap_errnos_missing_from_one_entry()
    {
        (VfioContainer c, _) = _bed.Std(_dev);
        ulong buf = _bed.Buffer(0x4000);
        ulong bm = _bed.Proc.Mmap(0x1000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x4000)));

        Assert.Equal(-(int)Errno.EFAULT, c.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, new byte[16])); // copy fault
        var u = new VfioIommuType1DmaUnmap(24, 0x8, I0, 0x4000);
        Assert.Equal(Errno.EINVAL, c.UnmapDma(ref u)); // unknown flag
        u = new VfioIommuType1DmaUnmap(24, 0, I0 + 0x800, 0x1000);
        Assert.Equal(Errno.EINVAL, c.UnmapDma(ref u)); // iova unaligned
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, Unmap(24, 0, I0, 0x1800)));
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, Unmap(24, 0, 0xFFFF_FFFF_FFFF_F000, 0x2000))); // wraps
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, Unmap(24, 0, I0, 0x1000))); // end bisects
        u = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL, 0, 0x1000);
        Assert.Equal(Errno.EINVAL, c.UnmapDma(ref u));

        // GET_DIRTY_BITMAP argument checks.
        uint dirty = VfioUapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
        var good = new VfioBitmap(0x1000, 8, bm);
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, Unmap(48, dirty | VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL, 0, 0, good)));
        u = new VfioIommuType1DmaUnmap(48, dirty | VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, I0, 0x4000, good);
        Assert.Equal(Errno.EINVAL, c.UnmapDma(ref u));
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, Unmap(40, dirty, I0, 0x4000, good))); // argsz < 48
        byte[] shortArg = Unmap(48, dirty, I0, 0x4000, good).AsSpan(0, 40).ToArray();
        Assert.Equal(-(int)Errno.EFAULT, c.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, shortArg)); // vfio_bitmap copy fault
        u = new VfioIommuType1DmaUnmap(48, dirty, I0, 0x4000, new VfioBitmap(0x1000, 8, KernelAddress));
        Assert.Equal(Errno.EINVAL, c.UnmapDma(ref u)); // access_ok
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, Unmap(48, dirty, I0, 0x4000, new VfioBitmap(0x1000, 0, bm)))); // 0 bytes
        u = new VfioIommuType1DmaUnmap(48, dirty, I0, 0x4000, good);
        Assert.Equal(Errno.EINVAL, c.UnmapDma(ref u)); // tracking off
        Assert.Equal(Errno.None, c.DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START));
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, Unmap(48, dirty, I0, 0x4000, new VfioBitmap(0x2000, 8, bm)))); // pgsize
        Assert.Equal(-(int)Errno.EFAULT, c.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, Unmap(48, dirty, I0, 0x4000, new VfioBitmap(0x1000, 8, 0)))); // NULL data

        // VADDR over an already-invalid mapping: -EINVAL, typed and raw.
        u = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, I0, 0x4000);
        Assert.Equal(Errno.None, c.UnmapDma(ref u));
        u = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, I0, 0x4000);
        Assert.Equal(Errno.EINVAL, c.UnmapDma(ref u));
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_UNMAP_DMA, Unmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, I0, 0x4000)));
        Assert.Single(c.Backend!.Mappings);
    }

    [Fact]
    public void Get_info_and_dirty_errnos_missing_from_one_entry()
    {
        (VfioContainer c, _) = _bed.Std(_dev);
        ulong buf = _bed.Buffer(0x4000);
        ulong bm = _bed.Proc.Mmap(0x1000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x4000)));

        var info = new byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(info, 15);
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_GET_INFO, info));
        Assert.Equal(-(int)Errno.EFAULT, c.Ioctl(VfioUapi.VFIO_IOMMU_GET_INFO, new byte[8]));

        var d = new byte[8];
        Assert.Equal(-(int)Errno.EFAULT, c.Ioctl(VfioUapi.VFIO_IOMMU_DIRTY_PAGES, new byte[4]));
        BinaryPrimitives.WriteUInt32LittleEndian(d, 7);
        BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(4), VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START);
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_DIRTY_PAGES, d)); // argsz < 8
        Assert.Equal(Errno.EINVAL, c.DirtyPages(0x8)); // unknown flag
        Assert.Equal(Errno.EINVAL, c.DirtyPages(0)); // no flag
        BinaryPrimitives.WriteUInt32LittleEndian(d, 8);
        BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(4), VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START | VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP);
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_DIRTY_PAGES, d)); // more than one flag
        var good = new VfioBitmap(0x1000, 8, bm);
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_DIRTY_PAGES, GetBitmap(48, I0, 0x4000, good))); // tracking off
        Assert.Equal(Errno.None, c.DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START));

        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_DIRTY_PAGES, GetBitmap(47, I0, 0x4000, good))); // argsz < 48
        Assert.Equal(-(int)Errno.EFAULT, c.Ioctl(VfioUapi.VFIO_IOMMU_DIRTY_PAGES, GetBitmap(48, I0, 0x4000, good).AsSpan(0, 40))); // copy fault
        Assert.Equal(Errno.EINVAL, c.GetDirtyBitmap(0xFFFF_FFFF_FFFF_F000, 0x1000, good)); // ends at 2^64: wraps here
        Assert.Equal(Errno.EINVAL, c.GetDirtyBitmap(I0, 0x4000, new VfioBitmap(0x1000, 8, KernelAddress))); // access_ok
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_DIRTY_PAGES, GetBitmap(48, I0, 0x4000, new VfioBitmap(0x1000, 7, bm)))); // size in u64 units
        Assert.Equal(Errno.EINVAL, c.GetDirtyBitmap(I0, 0x4000, new VfioBitmap(0x200000, 8, bm))); // pgsize
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_DIRTY_PAGES, GetBitmap(48, I0 + 0x800, 0x4000, good))); // iova unaligned
        Assert.Equal(Errno.EINVAL, c.GetDirtyBitmap(I0, 0x3800, good)); // size unaligned
        Assert.Equal(-(int)Errno.EINVAL, c.Ioctl(VfioUapi.VFIO_IOMMU_DIRTY_PAGES, GetBitmap(48, I0 + 0x1000, 0x3000, good))); // bisects
        Assert.Equal(Errno.EINVAL, c.GetDirtyBitmap(I0, 0x2000, good)); // end bisects
        Assert.Equal(Errno.None, c.GetDirtyBitmap(0x4000_0000, 0x4000, new VfioBitmap(0x1000, 8, 0))); // NULL data, nothing in range
    }

    [Fact]
    public void Vendor_pinning_and_notifier_errnos()
    {
        MdevDevice m = _bed.AddMttyMdev(register: false);
        VfioIommuNotifier nb = (_, _) => NotifyResult.Ok;

        // Not a VFIO device at all.
        Assert.Equal(-(int)Errno.ENODEV, _bed.Vfio.PinPages(m!, [I0 >> 12], 1, IommuProt.Read, new ulong[1]));
        Assert.Equal(Errno.ENODEV, _bed.Vfio.RegisterNotifier(m!, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, nb));

        // Registered, but its group is not in a container with a backend.
        _bed.Vfio.RegisterDevice(m!).ThrowIfError();
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.PinPages(m!, [I0 >> 12], 1, IommuProt.Read, new ulong[1]));
        Assert.Equal(Errno.EINVAL, _bed.Vfio.RegisterNotifier(m!, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, nb));
        Assert.Equal(Errno.EINVAL, _bed.Vfio.RegisterNotifier(m!, VfioNotifyType.Iommu, VfioIommuNotifyEvents.None, nb));

        (VfioContainer c, _) = _bed.Std(m!);
        ulong buf = _bed.Buffer(0x2000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x2000)));
        Assert.Equal(Errno.None, _bed.Vfio.RegisterNotifier(m!, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, nb));
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.PinPages(m!, null!, 1, IommuProt.Read, new ulong[1]));
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.UnpinPages(m!, [0x5000], 1)); // first IOVA without a mapping
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.UnpinPages(m!, [I0 >> 12], 0));
        Assert.Equal(-(int)Errno.E2BIG, _bed.Vfio.UnpinPages(m!, new ulong[513], 513));
        Assert.Equal(1, _bed.Vfio.UnpinPages(m!, [I0 >> 12, 0x5000], 2)); // stops at the first IOVA without a mapping; unpinned page: no-op

        // External-only container: vendor pins are accounted and limited by the mapping task's RLIMIT_MEMLOCK.
        _bed.Proc.CapIpcLock = false;
        _bed.Proc.RlimitMemlock = 0;
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0 + 0x10_0000, 0x1000))); // lock_cap sampled false
        var phys = new ulong[2];
        Assert.Equal(-(int)Errno.ENOMEM, _bed.Vfio.PinPages(m!, [(I0 >> 12) + 0x100], 1, IommuProt.Read, phys));
        Assert.Equal(0, _bed.Proc.LockedVm);
        Assert.Equal(2, _bed.Vfio.PinPages(m!, [I0 >> 12, (I0 >> 12) + 1], 2, IommuProt.Read, phys)); // lock_cap true at its MAP
        Assert.Equal(2, _bed.Proc.LockedVm);
        Assert.Equal(2, _bed.Vfio.UnpinPages(m!, [I0 >> 12, (I0 >> 12) + 1], 2));

        // A mapping whose process has exited: pinning from it is -ENODEV, vfio_dma_rw -EPERM.
        _bed.Proc.CapIpcLock = true;
        ProcessAddressSpace child = _bed.Proc.Fork("child");
        Assert.Equal(Errno.None, c.MapDma(child, Type1Bed.Map(buf, I0 + 0x20_0000, 0x1000)));
        child.Exit();
        Assert.Equal(-(int)Errno.ENODEV, _bed.Vfio.PinPages(m!, [(I0 + 0x20_0000) >> 12], 1, IommuProt.Read, phys));
        Assert.Equal(-(int)Errno.EPERM, _bed.Vfio.DmaRw(m!, I0 + 0x20_0000, new byte[8], write: false));
        Assert.Equal(Errno.None, _bed.Vfio.UnregisterNotifier(m!, VfioNotifyType.Iommu, nb));
    }

    [Fact]
    public void Pinning_through_a_device_whose_group_has_two_devices_is_einval()
    {
        PciDevice f0 = _bed.Pci.AddDevice(new PciDeviceSpec("0000:00:05.0") { Multifunction = true });
        PciDevice f1 = _bed.Pci.AddDevice(new PciDeviceSpec("0000:00:05.1"));
        _bed.Vfio.RegisterDevice(f0).ThrowIfError();
        _bed.Vfio.RegisterDevice(f1).ThrowIfError();
        Assert.Same(f0.IommuGroup, f1.IommuGroup);
        (VfioContainer c, _) = _bed.Std(f0);
        ulong buf = _bed.Buffer(0x1000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(buf, I0, 0x1000)));
        VfioIommuNotifier nb = (_, _) => NotifyResult.Ok;
        Assert.Equal(Errno.None, _bed.Vfio.RegisterNotifier(f1, VfioNotifyType.Iommu, VfioIommuNotifyEvents.DmaUnmap, nb)); // only pinning checks the device count
        Assert.Equal(-(int)Errno.EINVAL, _bed.Vfio.PinPages(f0, [I0 >> 12], 1, IommuProt.Read, new ulong[1]));
        Assert.Equal(0, c.Backend!.Mappings[0].ExternalPinCount);
        Assert.Equal(Errno.None, _bed.Vfio.UnregisterNotifier(f1, VfioNotifyType.Iommu, nb));
    }
}
