using Iommu.Devices;
using Iommu.Memory;
using Iommu.Domains;
using Iommu.Mm;
using Uacce;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Mtty;
using Vfio.Mdev;
using Vfio.Type1;

namespace Iommu.Reliability.Tests.Infrastructure;

/// <summary>
/// A fresh world for one bad-input row: a platform with a scalable-mode VT-d unit and its driver, a
/// Scalable-IOV PCI device and a plain one, a bus without IOMMU ops carrying a device with no group, a VFIO
/// core with a process, and (on first use) an mdev core with the mtty sample registered. Everything
/// expensive is built lazily.
/// </summary>
internal sealed class BadInputBed : IDisposable
{
    private IDomain? _domain;
    private VfioCore? _vfio;
    private ProcessAddressSpace? _proc;
    private MdevCore? _mdev;
    private MttyDriver? _mtty;
    private UacceDevice? _uacceDev;

    public BadInputBed()
    {
        Platform = new Platform(new PlatformOptions { MemorySize = 16 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        Pci = Platform.AddPciBus();
        Unit = new VtdUnit(Platform.Memory, VtdConfig.ScalableMode48Bit);
        Pci.AddDmaRemapper(Unit, includeAll: true);
        Driver = new IntelIommu(Platform, new IntelIommuOptions { ScalableMode = true }, Unit);
        Pci.SetIommuOps(Driver).ThrowIfError();
        Dev = Pci.AddDevice(new PciDeviceSpec("0000:00:01.0") { Acs = true, PasidWidth = 20, ScalableIov = true });
        Dev2 = Pci.AddDevice(new PciDeviceSpec("0000:00:02.0") { Acs = true });
        PlainBus = Platform.AddBus("plain");
        Orphan = new Device("orphan");
        PlainBus.AddDevice(Orphan);
    }

    public Platform Platform { get; }

    public IommuCore Iommu => Platform.Iommu;

    public PhysicalMemory Memory => Platform.Memory;

    public PciBus Pci { get; }

    public VtdUnit Unit { get; }

    public IntelIommu Driver { get; }

    public PciDevice Dev { get; }

    public PciDevice Dev2 { get; }

    /// <summary>A bus without IOMMU ops.</summary>
    public Bus PlainBus { get; }

    /// <summary>A device on <see cref="PlainBus"/>: no IOMMU group, never probed.</summary>
    public Device Orphan { get; }

    /// <summary>A DMA domain of the VT-d driver (allocated on first use, attached to nothing).</summary>
    public IDomain Domain => _domain ??= Iommu.DomainAlloc(Pci) ?? throw new InvalidOperationException("no domain");

    public VfioCore Vfio => _vfio ??= new VfioCore(Platform, new VfioType1Options { AllowUnsafeInterrupts = true });

    public HostPageAllocator Pages => field ??= HostPageAllocator.ForPlatform(Platform, 4 * Sizes.GiB, 64 * Sizes.MiB);

    public ProcessAddressSpace Proc => _proc ??= new ProcessAddressSpace(Pages, "bad-input");

    public MdevCore Mdev
    {
        get
        {
            if (_mdev is null)
            {
                _mdev = new MdevCore(Platform);
                _mtty = new MttyDriver(Platform.Memory);
                _mtty.Register(_mdev).ThrowIfError();
            }

            return _mdev;
        }
    }

    public MttyDriver Mtty => _mtty ?? (Mdev is not null ? _mtty! : throw new InvalidOperationException());

    public MdevParent MttyParent => Mdev.FindParent(Mtty.ParentDevice)!;

    public MdevType MttyType => MttyParent.SupportedTypes[0];

    /// <summary>A container with <see cref="Dev"/>'s group and a TYPE1v2 backend.</summary>
    public VfioContainer Container()
    {
        Vfio.RegisterDevice(Dev).ThrowIfError();
        VfioContainer c = Vfio.OpenContainer(Proc, out _);
        Vfio.OpenGroup(Proc, Dev.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        g!.SetContainer(c).ThrowIfError();
        c.SetIommu(global::Vfio.Type1.Uapi.VfioUapi.VFIO_TYPE1v2_IOMMU).ThrowIfError();
        return c;
    }

    /// <summary><see cref="Dev"/>'s VFIO group, open, in no container.</summary>
    public VfioGroup Group()
    {
        Vfio.RegisterDevice(Dev).ThrowIfError();
        Vfio.OpenGroup(Proc, Dev.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        return g!;
    }

    public MdevDevice NewMdev()
    {
        Mdev.Create(MttyType, Guid.NewGuid(), out MdevDevice? m).ThrowIfError();
        return m!;
    }

    public UacceCore Uacce => field ??= new UacceCore(Platform);

    public BadInputUacceOps UacceOps { get; } = new();

    /// <summary>A registered uacce device on <see cref="Dev2"/> (no SVA: PASID 0 queues).</summary>
    public UacceDevice UacceDev
    {
        get
        {
            if (_uacceDev is null)
            {
                Uacce.Alloc(Dev2, new UacceInterface("bad", UacceDeviceFlags.None, UacceOps), out _uacceDev).ThrowIfError();
                Uacce.Register(_uacceDev).ThrowIfError();
            }

            return _uacceDev!;
        }
    }

    /// <summary>A new queue of <see cref="UacceDev"/> opened by <see cref="Proc"/>.</summary>
    public UacceQueue UacceQueue()
    {
        Uacce.Open(UacceDev, Proc, out int fd).ThrowIfError();
        return (UacceQueue)Proc.GetFile(fd)!;
    }

    public void Dispose() => Platform.Dispose();
}
