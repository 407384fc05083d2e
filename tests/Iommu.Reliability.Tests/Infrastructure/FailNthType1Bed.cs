using System.Buffers.Binary;
using System.Globalization;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Vfio.Type1;
using Vfio.Type1.Uapi;

namespace Iommu.Reliability.Tests.Infrastructure;

/// <summary>
/// Two PCI segments, each behind its own VT-d unit and its own intel-iommu instance (so a group of
/// the second segment can never reuse the first one's domain: different ops, spec §4.4 step 13), a
/// VFIO core, a host page pool and one process with a container and both groups open.
/// </summary>
internal sealed class FailNthType1Bed : IDisposable
{
    /// <param name="options">type1 module parameters.</param>
    /// <param name="scalableSegment1">Segment 1's unit runs scalable mode with PASIDs and snoop control (for SIOV parents there).</param>
    /// <param name="interruptRemapping">Whether the units report interrupt remapping (ECAP.IR), as real units do.</param>
    public FailNthType1Bed(VfioType1Options? options = null, bool scalableSegment1 = false, bool interruptRemapping = true)
    {
        Platform = new Platform(new PlatformOptions { MemorySize = 64 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        Pci0 = Platform.AddPciBus(0);
        Pci1 = Platform.AddPciBus(1);
        Unit0 = new VtdUnit(Platform.Memory, VtdConfig.Legacy48Bit with { InterruptRemapping = interruptRemapping }, segment: 0);
        // SnoopControl: the 5.15 driver counts a scalable-mode unit as snooping and sets SNP (IOMMU_CACHE).
        Unit1 = new VtdUnit(Platform.Memory, scalableSegment1 ? VtdConfig.ScalableMode48Bit with { SnoopControl = true, InterruptRemapping = interruptRemapping } : VtdConfig.Legacy48Bit with { InterruptRemapping = interruptRemapping }, segment: 1);
        Pci0.AddDmaRemapper(Unit0, includeAll: true);
        Pci1.AddDmaRemapper(Unit1, includeAll: true);
        Driver0 = new IntelIommu(Platform, new IntelIommuOptions { ScalableMode = false }, Unit0);
        Driver1 = new IntelIommu(Platform, new IntelIommuOptions { ScalableMode = scalableSegment1 }, Unit1);
        Pci0.SetIommuOps(Driver0).ThrowIfError();
        Pci1.SetIommuOps(Driver1).ThrowIfError();
        Dev0 = Pci0.AddDevice(new PciDeviceSpec("0000:00:03.0") { Acs = true });
        Dev1 = Pci1.AddDevice(new PciDeviceSpec("0001:00:03.0") { Acs = true });
        Vfio = new VfioCore(Platform, options ?? new VfioType1Options { AllowUnsafeInterrupts = true });
        Vfio.RegisterDevice(Dev0).ThrowIfError();
        Vfio.RegisterDevice(Dev1).ThrowIfError();
        Pages = HostPageAllocator.ForPlatform(Platform, 4 * Sizes.GiB, 1 * Sizes.GiB);
        Proc = new ProcessAddressSpace(Pages, "qemu");
        Container = Vfio.OpenContainer(Proc, out _);
        Vfio.OpenGroup(Proc, Dev0.IommuGroup!.Id, out VfioGroup? g0, out _).ThrowIfError();
        Vfio.OpenGroup(Proc, Dev1.IommuGroup!.Id, out VfioGroup? g1, out _).ThrowIfError();
        G0 = g0!;
        G1 = g1!;
    }

    public Platform Platform { get; }

    public PciBus Pci0 { get; }

    public PciBus Pci1 { get; }

    public VtdUnit Unit0 { get; }

    public VtdUnit Unit1 { get; }

    public IntelIommu Driver0 { get; }

    public IntelIommu Driver1 { get; }

    public PciDevice Dev0 { get; }

    public PciDevice Dev1 { get; }

    public VfioCore Vfio { get; }

    public HostPageAllocator Pages { get; }

    public ProcessAddressSpace Proc { get; }

    public VfioContainer Container { get; }

    public VfioGroup G0 { get; }

    public VfioGroup G1 { get; }

    public VfioIommuType1 Backend => Container.Backend ?? throw new InvalidOperationException("no backend");

    /// <summary>An anonymous buffer whose page i holds (seed + i) in every byte, touched in order (contiguous host pages).</summary>
    public ulong Buffer(ulong size, byte seed)
    {
        ulong va = Proc.Mmap(size);
        var page = new byte[Sizes.Page];
        for (ulong i = 0; i < size / Sizes.Page; i++)
        {
            Array.Fill(page, (byte)(seed + i));
            Proc.Write(va + (i * Sizes.Page), page).ThrowIfError();
        }

        return va;
    }

    public Errno Map(ulong vaddr, ulong iova, ulong size) => Container.MapDma(new VfioIommuType1DmaMap(32, 3, vaddr, iova, size));

    public Errno Unmap(ulong iova, ulong size, out ulong unmapped)
    {
        var u = new VfioIommuType1DmaUnmap(24, 0, iova, size);
        Errno e = Container.UnmapDma(ref u);
        unmapped = u.Size;
        return e;
    }

    /// <summary><c>dma_avail</c> as user space sees it: the DMA_AVAIL capability of VFIO_IOMMU_GET_INFO.</summary>
    public uint DmaAvail()
    {
        var buf = new byte[512];
        BinaryPrimitives.WriteUInt32LittleEndian(buf, (uint)buf.Length);
        Container.GetInfo(buf).ThrowIfError();
        uint off = BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(16));
        while (off != 0)
        {
            ushort id = BinaryPrimitives.ReadUInt16LittleEndian(buf.AsSpan((int)off));
            if (id == VfioUapi.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL)
            {
                return BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan((int)off + 8));
            }

            off = BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan((int)off + 4));
        }

        throw new InvalidOperationException("GET_INFO has no DMA_AVAIL capability");
    }

    /// <summary>The counters that must not move: frames, DIDs, PASIDs, pins, locked_vm.</summary>
    /// <remarks>
    /// With a backend, frames are counted without its domains' page-table frames (see
    /// <see cref="FailNthVtdBed.Counters"/>: a failed map may leave empty tables linked in a domain,
    /// as the kernel does; they come back when the domain is freed, which the teardown checks).
    /// </remarks>
    public void Counters(List<string> s)
    {
        long tables = 0;
        if (Container.Backend is { } be)
        {
            foreach (IDomain d in be.Domains)
            {
                tables += ((DmarDomain)d).PageTable.TableFrames;
            }
        }

        s.Add($"frames.live-domain_tables={Platform.Frames.LiveFrames - tables}");
        s.Add($"unit0.dids={Driver0.Units[0].DomainIdsInUse} unit1.dids={Driver1.Units[0].DomainIdsInUse}");
        s.Add($"pasids={Driver0.PasidsInUse + Driver1.PasidsInUse}");
        s.Add($"host.pins={Pages.TotalPins} host.pages={Pages.AllocatedPages}");
        s.Add($"locked_vm={Proc.LockedVm}");
    }

    /// <summary>
    /// Everything observable about the container: counters, dma_avail (GET_INFO), the mappings, the
    /// groups' containers, iova_to_phys of every page of every mapping (and one page either side) in
    /// every domain, and DMA of both devices at the first and last page of every mapping. Runs Audit().
    /// </summary>
    public List<string> Snapshot()
    {
        var s = new List<string>();
        Counters(s);
        VfioIommuType1 be = Backend;
        be.Audit();
        s.Add($"dma_avail={DmaAvail()} domains={be.Domains.Count} g0.container={G0.Container is not null} g1.container={G1.Container is not null}");
        IReadOnlyList<VfioDma> maps = be.Mappings;
        foreach (VfioDma m in maps)
        {
            s.Add(string.Create(CultureInfo.InvariantCulture, $"dma 0x{m.Iova:x}+0x{m.Size:x} vaddr 0x{m.Vaddr:x} mapped={m.IommuMapped} locked={m.LockedPages}"));
        }

        IReadOnlyList<IDomain> doms = be.Domains;
        foreach (VfioDma m in maps)
        {
            for (int i = 0; i < doms.Count; i++)
            {
                Lookups(string.Create(CultureInfo.InvariantCulture, $"domain{i}"), doms[i], m.Iova - Sizes.Page, m.Size + (2 * Sizes.Page), s);
            }

            IEnumerable<ulong> probes = [m.Iova, m.Iova + m.Size - Sizes.Page, m.Iova + m.Size];
            FailNthVtdBed.Dma("dev0", Dev0, null, probes, s);
            FailNthVtdBed.Dma("dev1", Dev1, null, probes, s);
        }

        return s;
    }

    private void Lookups(string name, IDomain domain, ulong iova, ulong size, List<string> into)
    {
        ulong runStart = iova, runPa = Platform.Iommu.IovaToPhys(domain, iova), expect = runPa;
        for (ulong off = Sizes.Page; off <= size; off += Sizes.Page)
        {
            ulong pa = off == size ? ulong.MaxValue : Platform.Iommu.IovaToPhys(domain, iova + off);
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

    public void Dispose() => Platform.Dispose();
}
