using Iommu.Devices;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.Reliability.Tests.Infrastructure;

/// <summary>
/// A platform with one first-level-capable VT-d unit that has device-TLBs, a page request queue and PRQ drain,
/// the intel-iommu driver with first level for every domain, and the host page pool processes allocate from.
/// </summary>
internal sealed class SvaTestBed : IDisposable
{
    /// <param name="overflowResponse">The unit's automatic response to page requests it drops (null: none, the default profile).</param>
    /// <param name="loggerFactory">Where the platform logs (null: nowhere).</param>
    public SvaTestBed(int? overflowResponse = null, Microsoft.Extensions.Logging.ILoggerFactory? loggerFactory = null)
    {
        Platform = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB }, loggerFactory);
        Pci = Platform.AddPciBus();
        Unit = new VtdUnit(Platform.Memory, VtdConfig.ScalableModeFirstLevel48Bit with
        {
            DeviceTlb = true, PageRequests = true, PageRequestDrain = true, PageRequestOverflowResponse = overflowResponse,
        });
        Pci.AddDmaRemapper(Unit, includeAll: true);
        Driver = new IntelIommu(Platform, new IntelIommuOptions { FirstLevel = FirstLevelPolicy.AllWhenEveryUnitHasFlts }, Unit);
        Pci.SetIommuOps(Driver).ThrowIfError();
        Pages = HostPageAllocator.ForPlatform(Platform);
    }

    public Platform Platform { get; }

    public IommuCore Iommu => Platform.Iommu;

    public PciBus Pci { get; }

    public VtdUnit Unit { get; }

    public IntelIommu Driver { get; }

    public HostPageAllocator Pages { get; }

    /// <summary>A PASID device; with <paramref name="sva"/> it has ATS and PRI (enabled by the driver at attach) and IOPF and SVA enabled.</summary>
    public PciDevice AddDevice(string bdf, bool sva)
    {
        PciDevice dev = Pci.AddDevice(new PciDeviceSpec(bdf) { PasidWidth = 20, Ats = sva, Pri = sva, Acs = true });
        if (sva)
        {
            if (!dev.AtsEnabled || !dev.PriEnabled)
            {
                throw new InvalidOperationException($"{bdf}: the driver did not enable ATS and PRI at attach");
            }

            Iommu.DevEnableFeature(dev, IommuDevFeature.Iopf).ThrowIfError();
            Iommu.DevEnableFeature(dev, IommuDevFeature.Sva).ThrowIfError();
        }

        return dev;
    }

    /// <summary>
    /// An UNMANAGED domain with one 4 KiB page mapped (IOVA 0x10_0000), attached to a new ATS device at <paramref name="bdf"/>:
    /// an unmap of that page goes through the driver's device-TLB flush (which takes its device-domain lock).
    /// </summary>
    public Domains.IDomain AtsDomainWithPage(string bdf)
    {
        PciDevice ats = Pci.AddDevice(new PciDeviceSpec(bdf) { PasidWidth = 20, Ats = true, Acs = true });
        Domains.IDomain dom = Iommu.DomainAlloc(Pci) ?? throw new InvalidOperationException("domain alloc failed");
        Iommu.AttachDevice(dom, ats).ThrowIfError();
        Iommu.Map(dom, 0x10_0000, 0x1_0000_0000, 4096, Domains.IommuProt.Read | Domains.IommuProt.Write).ThrowIfError();
        return dom;
    }

    /// <summary>Page group responses (descriptor type 9, q0 and q1) queued to the invalidation queue since <paramref name="mark"/> (an IQT value).</summary>
    public List<(ulong Q0, ulong Q1)> Responses(ulong mark)
    {
        ulong iqa = Unit.Read64(0x90), queue = iqa & ~0xFFFUL, size = 4096UL << (int)(iqa & 7), end = Unit.Read64(0x88);
        var list = new List<(ulong, ulong)>();
        for (ulong at = mark; at != end; at = (at + 32) % size)
        {
            ulong q0 = Platform.Memory.ReadUInt64(queue + at);
            if ((q0 & 0xF) == 9)
            {
                list.Add((q0, Platform.Memory.ReadUInt64(queue + at + 8)));
            }
        }

        return list;
    }

    /// <summary>The invalidation queue tail now (a mark for <see cref="Responses"/>).</summary>
    public ulong Mark() => Unit.Read64(0x88);

    public void Dispose() => Platform.Dispose();
}
