using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using Iommu.VtD.Hardware;
using Vfio.Type1.Tests.Infrastructure;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests;

/// <summary>What MAP_DMA pins from: huge pages (superpages), PFNMAP, zero page, munmap, VADDR, locked_vm across containers.</summary>
public sealed class ProcessMemoryTests : IDisposable
{
    private readonly Type1Bed _bed = new();
    private readonly PciDevice _dev;

    public ProcessMemoryTests() => _dev = _bed.AddDevice("0000:00:03.0");

    public void Dispose() => _bed.Dispose();

    [Fact]
    public void Hugepage_backed_memory_is_mapped_with_a_2M_superpage()
    {
        (VfioContainer c, _) = _bed.Std(_dev);
        ulong va = _bed.Proc.Mmap(2 * Sizes.MiB, VmProt.ReadWrite, VmaKind.HugePage);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(va, 0x4000_0000, 2 * Sizes.MiB)));
        VtdTranslation t = _bed.Unit.Translate(_dev.RequesterId, null, 0x4000_0000 + 0x1234, 1, DmaAccess.Read);
        Assert.Equal(2 * Sizes.MiB, t.PageSize);
        Assert.True(_bed.Proc.TryTranslate(va + 0x1000, out ulong pfn));
        Assert.Equal((pfn << 12) + 0x234, t.PhysicalAddress);
        Assert.Equal(512, _bed.Proc.LockedVm);
        c.Backend!.Audit();
    }

    [Fact]
    public void Pfnmap_pages_are_mapped_but_never_charged()
    {
        (VfioContainer c, _) = _bed.Std(_dev);
        _bed.Proc.CapIpcLock = false;
        _bed.Proc.RlimitMemlock = 0;
        ulong bar = _bed.Proc.Mmap(0x2000, VmProt.ReadWrite, VmaKind.PfnMap, physicalBase: 0x8_0000_0000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(bar, 0x20_0000, 0x2000)));
        Assert.Equal(0, _bed.Proc.LockedVm);
        Assert.Equal(0x8_0000_1000UL, _bed.Iommu.IovaToPhys(c.Backend!.Domains[0], 0x20_1000));
    }

    [Fact]
    public void Readonly_map_of_untouched_memory_pins_the_zero_page_and_a_later_cpu_write_is_not_seen()
    {
        (VfioContainer c, _) = _bed.Std(_dev);
        _bed.Proc.CapIpcLock = false;
        _bed.Proc.RlimitMemlock = 0;
        ulong va = _bed.Proc.Mmap(0x1000);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(va, 0x10_0000, 0x1000, flags: 1)));
        Assert.Equal(0, _bed.Proc.LockedVm);
        Assert.Equal(Errno.None, _bed.Proc.Write(va, new byte[] { 0x99 }));
        var b = new byte[1];
        Assert.True(_dev.DmaRead(null, 0x10_0000, b).IsOk);
        Assert.Equal(0, b[0]);
    }

    [Fact]
    public void Locked_vm_is_shared_by_containers_of_one_process_and_returns_to_zero()
    {
        PciDevice d2 = _bed.AddDevice("0000:00:04.0");
        (VfioContainer c1, VfioGroup g1) = _bed.Std(_dev);
        (VfioContainer c2, VfioGroup g2) = _bed.Std(d2);
        ulong buf = _bed.Buffer(0x3000);
        _bed.Proc.CapIpcLock = false;
        _bed.Proc.RlimitMemlock = 0x4000;
        Assert.Equal(Errno.None, c1.MapDma(Type1Bed.Map(buf, 0x10_0000, 0x3000)));
        Assert.Equal(Errno.ENOMEM, c2.MapDma(Type1Bed.Map(buf, 0x10_0000, 0x2000))); // same vaddr counts again: 3 + 2 > 4
        Assert.Equal(Errno.None, c2.MapDma(Type1Bed.Map(buf, 0x10_0000, 0x1000)));
        Assert.Equal(4, _bed.Proc.LockedVm);
        Assert.Equal(Errno.None, g1.UnsetContainer());
        Assert.Equal(1, _bed.Proc.LockedVm);
        Assert.Equal(Errno.None, g2.Close()); // closing the group fd detaches it and releases the backend
        Assert.Null(c2.Backend);
        Assert.Equal(0, _bed.Proc.LockedVm);
        Assert.Equal(0, _bed.Pages.TotalPins);
    }

    [Fact]
    public void Vaddr_invalidate_and_update_keep_the_old_pages_and_roll_back_on_conflict()
    {
        (VfioContainer c, _) = _bed.Std(_dev);
        ulong b0 = _bed.Buffer(0x2000, seed: 0x10);
        ulong b1 = _bed.Buffer(0x2000, seed: 0x80);
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(b0, 0x10_0000, 0x1000)));
        Assert.Equal(Errno.None, c.MapDma(Type1Bed.Map(b0 + 0x1000, 0x10_1000, 0x1000)));
        var u = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, 0x10_1000, 0x1000);
        Assert.Equal(Errno.None, c.UnmapDma(ref u));
        u = new VfioIommuType1DmaUnmap(24, VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR, 0x10_0000, 0x2000);
        Assert.Equal(Errno.EINVAL, c.UnmapDma(ref u)); // second mapping already invalid: the first mark is undone
        Assert.False(c.Backend!.Mappings[0].VaddrInvalid);
        Assert.Equal(Errno.EEXIST, c.MapDma(Type1Bed.Map(b1, 0x10_1000, 0x1000)));
        Assert.Equal(Errno.None, c.MapDma(new VfioIommuType1DmaMap(32, VfioUapi.VFIO_DMA_MAP_FLAG_VADDR, b1 + 0x1000, 0x10_1000, 0x1000)));
        var b = new byte[1];
        Assert.True(_dev.DmaRead(null, 0x10_1000, b).IsOk);
        Assert.Equal(0x11, b[0]); // still the pages pinned from the old vaddr
        Assert.Equal(2, _bed.Proc.LockedVm);
        c.Backend.Audit();
    }
}
