using BenchmarkDotNet.Attributes;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.Benchmarks;

/// <summary>
/// The C-floor workload through the whole kernel path: <c>iommu_map</c> / <c>iommu_unmap</c> /
/// <c>iommu_iova_to_phys</c> in <see cref="IommuCore"/> → <see cref="IntelIommu"/> → page table,
/// including the IOTLB flush each unmap sends through the invalidation queue to the hardware model.
/// </summary>
[MemoryDiagnoser]
public class DriverPath64K : IDisposable
{
    private const int Pages = 1 << 16;
    private Platform _platform = null!;
    private IDomain _domain = null!;
    private ulong[] _order = [];

    /// <summary>The platform with one device attached to <see cref="Domain"/>.</summary>
    protected Platform Platform => _platform;

    /// <summary>The paging domain the rows map into.</summary>
    protected IDomain Domain => _domain;

    [GlobalSetup]
    public virtual void Setup()
    {
        _platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB, TableMemorySize = 1 * Sizes.GiB });
        PciBus pci = _platform.AddPciBus();
        var unit = new VtdUnit(_platform.Memory, VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(_platform, unit)).ThrowIfError();
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:03.0"));
        _domain = _platform.Iommu.DomainAlloc(pci)!;
        _platform.Iommu.AttachDevice(_domain, dev).ThrowIfError();
        _order = Workload.Order(Pages);
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _platform.Dispose();
        GC.SuppressFinalize(this);
    }

    [IterationSetup(Target = nameof(IommuMap4K))]
    public void Empty() => _platform.Iommu.Unmap(_domain, Workload.IovaBase, (ulong)Pages << 12);

    [IterationSetup(Targets = [nameof(IommuIovaToPhys), nameof(IommuUnmap4K)])]
    public void Full()
    {
        Empty();
        IommuMap4K();
    }

    [Benchmark(OperationsPerInvoke = Pages)]
    public void IommuMap4K()
    {
        IommuCore iommu = _platform.Iommu;
        foreach (ulong k in _order)
        {
            if (iommu.Map(_domain, Workload.IovaBase + (k << 12), Workload.PhysBase + (k << 12), 4096, IommuProt.Read | IommuProt.Write) != Errno.None)
            {
                throw new InvalidOperationException("map failed");
            }
        }
    }

    // Reverse order and checked, as the C floor's lookup pass (rp_lookup_pass) and PageTable64K's row do.
    [Benchmark(OperationsPerInvoke = Pages)]
    public ulong IommuIovaToPhys()
    {
        IommuCore iommu = _platform.Iommu;
        ulong[] order = _order;
        ulong sink = 0;
        for (int i = order.Length - 1; i >= 0; i--)
        {
            ulong k = order[i];
            ulong pa = iommu.IovaToPhys(_domain, Workload.IovaBase + (k << 12) + 8);
            if (pa != Workload.PhysBase + (k << 12) + 8)
            {
                throw new InvalidOperationException("bad translation");
            }

            sink += pa;
        }

        return sink;
    }

    [Benchmark(OperationsPerInvoke = Pages)]
    public void IommuUnmap4K()
    {
        IommuCore iommu = _platform.Iommu;
        foreach (ulong k in _order)
        {
            if (iommu.Unmap(_domain, Workload.IovaBase + (k << 12), 4096) != 4096)
            {
                throw new InvalidOperationException("unmap failed");
            }
        }
    }
}

/// <summary>
/// <see cref="DriverPath64K"/>'s rows in a process that first mapped and unmapped ranges through
/// <c>iommu_map</c> (as a guest's boot or the DMA API's scatter-gather lists do): with tiered compilation,
/// the dynamic profile of <see cref="IommuCore.Map"/> and of the driver's and table's map paths then says
/// "ranges", and the 4 KiB rows' code is compiled from it. Before session 13 this made a single-page
/// <c>iommu_map</c> 2-2.5x slower than in a fresh process; the row keeps that case measured.
/// </summary>
public class DriverPathAfterRanges64K : DriverPath64K
{
    [GlobalSetup]
    public override void Setup()
    {
        base.Setup();
        const ulong Far = 0x80_0000_0000; // above the rows' IOVAs
        IommuCore iommu = Platform.Iommu;
        for (int round = 0; round < 3; round++)
        {
            for (int i = 0; i < 200; i++)
            {
                ulong iova = Far + ((ulong)i << 21);
                if (iommu.Map(Domain, iova, Workload.PhysBase + ((ulong)i << 21), 256 * 4096, IommuProt.Read | IommuProt.Write) != Errno.None
                    || iommu.Unmap(Domain, iova, 256 * 4096) != 256 * 4096)
                {
                    throw new InvalidOperationException("range map failed");
                }
            }

            Thread.Sleep(300); // let the range-driven methods reach tier 1 with that profile
        }
    }
}

/// <summary>Hardware translation of a DMA request: IOTLB hit (one page again and again) and miss (a new page each time).</summary>
[MemoryDiagnoser]
public class HardwareTranslate : IDisposable
{
    private const int Pages = 1 << 14;
    private Platform _platform = null!;
    private VtdUnit _unit = null!;
    private PciDevice _dev = null!;
    private ushort _rid;
    private readonly byte[] _buffer = new byte[8];

    [GlobalSetup]
    public void Setup()
    {
        _platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB });
        PciBus pci = _platform.AddPciBus();
        _unit = new VtdUnit(_platform.Memory, VtdConfig.ScalableMode48Bit with { IotlbCapacity = 1024 });
        pci.AddDmaRemapper(_unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(_platform, _unit)).ThrowIfError();
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:00:03.0"));
        IDomain domain = _platform.Iommu.DomainAlloc(pci)!;
        _platform.Iommu.AttachDevice(domain, dev).ThrowIfError();
        _platform.Iommu.Map(domain, Workload.IovaBase, Workload.PhysBase, (ulong)Pages << 12, IommuProt.Read | IommuProt.Write).ThrowIfError();
        _rid = dev.RequesterId;
        _dev = dev;
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _platform.Dispose();
        GC.SuppressFinalize(this);
    }

    [Benchmark(OperationsPerInvoke = 1024)]
    public ulong TranslateIotlbHit()
    {
        ulong sink = 0;
        for (int i = 0; i < 1024; i++)
        {
            sink += _unit.Translate(_rid, null, Workload.IovaBase + 0x40, 8, DmaAccess.Read).PhysicalAddress;
        }

        return sink;
    }

    /// <summary>An 8-byte device read through <see cref="PciDevice.DmaRead(uint?, ulong, Span{byte})"/> (the remapper lookup, an IOTLB hit and the copy).</summary>
    /// <returns>A sink.</returns>
    [Benchmark(OperationsPerInvoke = 1024)]
    public ulong DmaRead8IotlbHit()
    {
        ulong sink = 0;
        for (int i = 0; i < 1024; i++)
        {
            sink += _dev.DmaRead(null, Workload.IovaBase + 0x40, _buffer).Transferred;
        }

        return sink;
    }

    [Benchmark(OperationsPerInvoke = Pages)]
    public ulong TranslateIotlbMiss()
    {
        // Pages (16384) cycle through an IOTLB of 1024 entries: nearly every request walks the tables.
        ulong sink = 0;
        for (ulong k = 0; k < Pages; k++)
        {
            sink += _unit.Translate(_rid, null, Workload.IovaBase + (k << 12), 8, DmaAccess.Read).PhysicalAddress;
        }

        return sink;
    }
}
