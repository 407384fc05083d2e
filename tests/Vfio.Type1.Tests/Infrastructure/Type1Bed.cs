using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Vfio.Type1;
using Vfio.Type1.Uapi;

namespace Vfio.Type1.Tests.Infrastructure;

/// <summary>A platform with one VT-d unit (or two) and its driver, a VFIO core, a host page pool and one process.</summary>
internal sealed class Type1Bed : IDisposable
{
    /// <param name="config">The catch-all unit (default: legacy, 39-bit).</param>
    /// <param name="scalable">Scalable mode in the driver.</param>
    /// <param name="options">type1 options (default: allow unsafe interrupts).</param>
    /// <param name="meterFactory">Meters.</param>
    /// <param name="secondUnit">A second unit covering 0000:05:00.0–05:03.0 (say, of another width), or none.</param>
    public Type1Bed(VtdConfig? config = null, bool scalable = false, VfioType1Options? options = null, System.Diagnostics.Metrics.IMeterFactory? meterFactory = null, VtdConfig? secondUnit = null)
    {
        config ??= VtdConfig.Legacy39Bit;
        Platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB, TableMemorySize = 256 * Sizes.MiB, MeterFactory = meterFactory });
        Pci = Platform.AddPciBus();
        Unit = new VtdUnit(Platform.Memory, config);
        VtdUnit[] units = [Unit];
        if (secondUnit is not null)
        {
            var other = new VtdUnit(Platform.Memory, secondUnit);
            Pci.AddDmaRemapper(other, includeAll: false, [.. Enumerable.Range(0, 4).Select(d => new PciAddress(0, 5, d, 0))]);
            units = [Unit, other];
        }

        Pci.AddDmaRemapper(Unit, includeAll: true);
        Driver = new IntelIommu(Platform, new IntelIommuOptions { ScalableMode = scalable }, units);
        Pci.SetIommuOps(Driver).ThrowIfError();
        Vfio = new VfioCore(Platform, options ?? new VfioType1Options { AllowUnsafeInterrupts = true });
        Pages = HostPageAllocator.ForPlatform(Platform, 4 * Sizes.GiB, 1 * Sizes.GiB);
        Proc = new ProcessAddressSpace(Pages, "qemu");
    }

    public Platform Platform { get; }

    public IommuCore Iommu => Platform.Iommu;

    public PciBus Pci { get; }

    public VtdUnit Unit { get; }

    public IntelIommu Driver { get; }

    public VfioCore Vfio { get; }

    public HostPageAllocator Pages { get; }

    public ProcessAddressSpace Proc { get; }

    public PciDevice AddDevice(string bdf, bool register = true, int pasidWidth = 0, bool siov = false)
    {
        PciDevice d = Pci.AddDevice(new PciDeviceSpec(bdf) { Acs = true, PasidWidth = pasidWidth, ScalableIov = siov });
        if (register)
        {
            Vfio.RegisterDevice(d).ThrowIfError();
        }

        return d;
    }

    /// <summary>The "std" prelude: open container and group, SET_CONTAINER, SET_IOMMU.</summary>
    public (VfioContainer C, VfioGroup G) Std(Device dev, int type = VfioUapi.VFIO_TYPE1v2_IOMMU)
    {
        VfioContainer c = Vfio.OpenContainer(Proc, out _);
        Vfio.OpenGroup(Proc, dev.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        g!.SetContainer(c).ThrowIfError();
        c.SetIommu(type).ThrowIfError();
        return (c, g);
    }

    /// <summary>An anonymous buffer with every byte of page i = (seed + i) &amp; 0xff.</summary>
    public ulong Buffer(ulong size, byte seed = 0x10, VmProt prot = VmProt.ReadWrite)
    {
        ulong va = Proc.Mmap(size);
        var page = new byte[4096];
        for (ulong i = 0; i < size / 4096; i++)
        {
            Array.Fill(page, (byte)(seed + i));
            Proc.Write(va + (i * 4096), page).ThrowIfError();
        }

        if (prot != VmProt.ReadWrite)
        {
            Proc.Mprotect(va, size, prot);
        }

        return va;
    }

    public static VfioIommuType1DmaMap Map(ulong vaddr, ulong iova, ulong size, uint flags = 3) => new(32, flags, vaddr, iova, size);

    /// <summary>
    /// An mtty mdev (type mtty-1, no IOMMU device: the container's external domain), created on a new mdev core
    /// and, with <paramref name="register"/>, registered with <see cref="Vfio"/>.
    /// </summary>
    public Vfio.Mdev.MdevDevice AddMttyMdev(bool register = true)
    {
        var mdev = new Vfio.Mdev.MdevCore(Platform);
        var mtty = new Mtty.MttyDriver(Platform.Memory, pinning: null);
        mtty.Register(mdev).ThrowIfError();
        mdev.Create(mdev.FindParent(mtty.ParentDevice)!.FindType("mtty-1")!, Guid.NewGuid(), out Vfio.Mdev.MdevDevice? m).ThrowIfError();
        if (register)
        {
            Vfio.RegisterDevice(m!).ThrowIfError();
        }

        return m!;
    }

    public void Dispose() => Platform.Dispose();
}
