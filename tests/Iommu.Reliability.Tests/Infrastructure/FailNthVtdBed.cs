using System.Globalization;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.Reliability.Tests.Infrastructure;

/// <summary>
/// A platform with one VT-d unit (or two) and the intel-iommu driver, plus the observable-state snapshot the
/// fail_nth sweeps compare: live frames, DIDs per unit, PASIDs, every leaf of the named domains,
/// iova_to_phys over the named ranges and real DMA through the unit.
/// </summary>
internal sealed class FailNthVtdBed : IDisposable
{
    /// <param name="config">The catch-all unit.</param>
    /// <param name="scalable">Scalable mode on in the driver.</param>
    /// <param name="secondUnit">A second unit (say, of another width) covering 0000:05:00.0–05:03.0, or none.</param>
    public FailNthVtdBed(VtdConfig config, bool scalable, VtdConfig? secondUnit = null)
    {
        Platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
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
    }

    public Platform Platform { get; }

    public IommuCore Iommu => Platform.Iommu;

    public PciBus Pci { get; }

    public VtdUnit Unit { get; }

    public IntelIommu Driver { get; }

    public PciDevice AddDevice(string bdf, int pasidWidth = 0, bool siov = false) =>
        Pci.AddDevice(new PciDeviceSpec(bdf) { Acs = true, PasidWidth = pasidWidth, ScalableIov = siov });

    /// <summary>An SIOV parent with AUX enabled (attached to its default domain first, as the driver requires).</summary>
    public PciDevice AuxParent(string bdf, int pasidWidth = 20)
    {
        PciDevice d = AddDevice(bdf, pasidWidth, siov: true);
        Iommu.SetDevAttr(d, IommuDevAttr.AuxdEnable).ThrowIfError();
        return d;
    }

    public DmarDomain Unmanaged() => (DmarDomain)(Iommu.DomainAlloc(Pci) ?? throw new InvalidOperationException("domain allocation failed"));

    /// <summary>
    /// The bookkeeping counters: live frames, DIDs of every unit, PASIDs. With <paramref name="domains"/>,
    /// the frames are counted without those domains' page-table frames: a failed map may leave empty
    /// tables linked in the domain (the kernel's <c>__domain_mapping</c> does not free the tables it
    /// allocated before the failing one, and the unwinding unmap frees only tables it covers
    /// entirely); they are owned, not leaked, and come back at <c>domain_exit</c>, which the
    /// teardown checks against the raw count.
    /// </summary>
    public void Counters(List<string> into, params DmarDomain[] domains)
    {
        long tables = 0;
        foreach (DmarDomain d in domains)
        {
            tables += d.PageTable.TableFrames;
        }

        into.Add(domains.Length == 0 ? $"frames.live={Platform.Frames.LiveFrames}" : $"frames.live-domain_tables={Platform.Frames.LiveFrames - tables}");
        foreach (IntelIommuUnit u in Driver.Units)
        {
            into.Add($"unit{u.SeqId}.dids={u.DomainIdsInUse}");
        }

        into.Add($"pasids={Driver.PasidsInUse}");
    }

    /// <summary>Every present leaf of <paramref name="domain"/>'s page table, in IOVA order.</summary>
    public static void Leaves(string name, DmarDomain domain, List<string> into)
    {
        var leaves = new List<string>();
        domain.PageTable.ForEachLeaf((iova, pa, size, pte) =>
            leaves.Add(string.Create(CultureInfo.InvariantCulture, $"{name} leaf 0x{iova:x} -> 0x{pa:x} size 0x{size:x} pte 0x{pte:x}")));
        into.Add($"{name} leaves={leaves.Count}");
        into.AddRange(leaves);
    }

    /// <summary>iova_to_phys of every 4 KiB page of [iova, iova + size), run-length compressed.</summary>
    public void Lookups(string name, IDomain domain, ulong iova, ulong size, List<string> into)
    {
        ulong runStart = iova, runPa = Iommu.IovaToPhys(domain, iova), expect = runPa;
        for (ulong off = Sizes.Page; off <= size; off += Sizes.Page)
        {
            ulong pa = off == size ? ulong.MaxValue : Iommu.IovaToPhys(domain, iova + off);
            ulong next = expect == 0 ? 0 : expect + Sizes.Page;
            if (off < size && pa == next)
            {
                expect = next;
                continue;
            }

            into.Add(string.Create(CultureInfo.InvariantCulture, $"{name} iova_to_phys [0x{runStart:x}, 0x{iova + off:x}) -> 0x{runPa:x}"));
            runStart = iova + off;
            runPa = expect = pa;
        }
    }

    /// <summary>A real device read of 8 bytes at each IOVA: status, physical address and fault reason.</summary>
    public static void Dma(string name, PciDevice device, uint? pasid, IEnumerable<ulong> iovas, List<string> into)
    {
        Span<byte> b = stackalloc byte[8];
        foreach (ulong iova in iovas)
        {
            DmaResult r = device.DmaRead(pasid, iova, b);
            into.Add(string.Create(CultureInfo.InvariantCulture, $"{name} dma 0x{iova:x} -> {r.Status} 0x{(r.IsOk ? r.Address : 0):x} reason 0x{r.FaultReason:x} data 0x{(r.IsOk ? BitConverter.ToUInt64(b) : 0):x}"));
        }
    }

    /// <summary>The first, last and every <paramref name="stride"/>-th page of a range.</summary>
    public static IEnumerable<ulong> Samples(ulong iova, ulong size, ulong stride)
    {
        for (ulong off = 0; off < size; off += stride)
        {
            yield return iova + off;
        }

        yield return iova + size - Sizes.Page;
    }

    public void Dispose() => Platform.Dispose();
}
