using System.Globalization;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Hardware;
using Vfio.Type1;
using Vfio.Type1.Uapi;

namespace Iommu.Conformance.Tests.Scenarios;

/// <summary>The driver-built scenarios the conformance test runs (model configured like QEMU's <c>intel-iommu,aw-bits=48</c>: HAW 48, one fault record).</summary>
internal static class ScenarioCatalog
{
    public const IommuProt RW = IommuProt.Read | IommuProt.Write;
    public const ulong K4 = 4096, M2 = 2UL << 20, G1 = 1UL << 30;

    public static readonly string[] Names = ["legacy-4level", "legacy-3level", "scalable-4level", "scalable-3level", "type1-legacy-4level", "type1-scalable-4level"];

    public static VtdConfig Config(string name) => name switch
    {
        "type1-legacy-4level" => Config("legacy-4level"),
        "type1-scalable-4level" => Config("scalable-4level"),
        "legacy-4level" => VtdConfig.Legacy48Bit with { HostAddressWidth = 48, FaultRecordCount = 1 },
        "legacy-3level" => VtdConfig.Legacy48Bit with { HostAddressWidth = 48, FaultRecordCount = 1, Supports48BitTables = false, MaxGuestAddressWidth = 39 },
        "scalable-4level" => VtdConfig.ScalableMode48Bit with { HostAddressWidth = 48, FaultRecordCount = 1 },
        "scalable-3level" => VtdConfig.ScalableMode48Bit with { HostAddressWidth = 48, FaultRecordCount = 1, Supports48BitTables = false, MaxGuestAddressWidth = 39 },
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "unknown scenario"),
    };

    public static ConformanceScenario Build(string name)
    {
        // The full 4-level scenarios have a second, 3-level unit for domains shared across widths.
        bool full = name is "legacy-4level" or "scalable-4level";
        var s = new ConformanceScenario(name, Config(name), full ? Config(name.Replace("4level", "3level", StringComparison.Ordinal)) : null);
        try
        {
            if (name.StartsWith("type1", StringComparison.Ordinal))
            {
                Type1(s);
            }
            else if (name.StartsWith("legacy", StringComparison.Ordinal))
            {
                Legacy(s, full: name == "legacy-4level");
            }
            else
            {
                Scalable(s, full: name == "scalable-4level");
            }

            return s;
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    // Shared mappings of one paging domain: every page size, read-only pages, a write-only request (the
    // 5.15 driver writes it R+W: "iommu/vt-d: Remove WO permissions on second-level paging entries"), unmaps.
    private static void CommonMaps(ConformanceScenario s, IDomain d, ulong pa)
    {
        s.Map(d, 0x1000_0000, pa, K4, RW);                          // 4 KiB read/write
        s.Map(d, 0x1000_1000, pa + 0x2000, K4, IommuProt.Read);     // 4 KiB read-only
        s.Map(d, 0x1000_2000, pa + 0x4000, K4, IommuProt.Write);    // 4 KiB write-only request, leaf R+W
        s.Map(d, 0x1001_0000, pa + 0x10000, 4 * K4, RW);            // four 4 KiB pages …
        s.Unmap(d, 0x1001_1000, K4);                                // … minus one
        s.Map(d, 0x1000_3000, pa + 0x6000, K4, RW);
        s.Unmap(d, 0x1000_3000, K4);                                // mapped, then unmapped
        s.Map(d, 0x2000_0000, pa + M2, M2, RW);                     // 2 MiB read/write
        s.Map(d, 0x2020_0000, pa + (2 * M2), M2, IommuProt.Read);   // 2 MiB read-only
        s.Map(d, 0x2040_0000, pa + (3 * M2), M2, RW);
        s.Unmap(d, 0x2040_0000, M2);                                // 2 MiB unmapped again
        s.Map(d, 0x2060_0000, pa + (4 * M2), 2 * M2, RW);           // two adjacent 2 MiB pages …
        s.Unmap(d, 0x2060_8000, K4, removedIova: 0x2060_0000, removedSize: M2); // … 4 KiB inside the first removes it whole, not the second
        s.AddPoint(d, 0x2080_8000);
    }

    // Two units of different widths (the exported one walks 4 levels, the other 3): a domain first
    // attached behind the 3-level unit keeps 3 levels and the 4-level unit walks it with a 39-bit AW;
    // a domain in use on the 4-level unit is refused behind the 3-level one (its top level stays).
    private static void SharedAcrossWidths(ConformanceScenario s, IDomain inUse)
    {
        PciDevice narrow = s.OtherUnitDevice("05:00.0");
        PciDevice narrow2 = s.OtherUnitDevice("05:01.0");
        IDomain shared = s.NewDomain();
        s.Attach(shared, narrow);
        s.Attach(shared, s.Device("00:11.0"));
        s.Map(shared, 0x1000_0000, 0x0580_0000, K4, RW);
        s.Map(shared, 0x2000_0000, 0x05A0_0000, M2, RW);
        s.Map(shared, 0x7F_C000_0000, 0x05C0_0000, K4, RW);          // the top of the 39-bit space
        ConformanceScenario.Expect(Errno.EINVAL, s.Iommu.AttachDevice(inUse, narrow2), "attach a domain in use on the 4-level unit behind the 3-level one");
    }

    // VFIO type1 as QEMU uses it: one container per device, guest memory from a process address
    // space (anonymous pages, a read-only buffer, a hugetlb 2 MiB page), MAP_DMA and UNMAP_DMA.
    // The same IOVAs in both containers reach different host pages.
    private static void Type1(ConformanceScenario s)
    {
        PciDevice a = s.Device("00:04.0");
        PciDevice b = s.Device("01:00.0");
        var vfio = new VfioCore(s.Platform, new VfioType1Options { AllowUnsafeInterrupts = true });
        Check(vfio.RegisterDevice(a), "register 00:04.0");
        Check(vfio.RegisterDevice(b), "register 01:00.0");

        // Host pages inside the QEMU guest's RAM, clear of the table window and the other scenarios' pages.
        var pages = HostPageAllocator.ForPlatform(s.Platform, 0x0800_0000, 64 * Sizes.MiB);
        var qemu = new ProcessAddressSpace(pages, "qemu");
        Type1Guest(s, vfio, qemu, a);
        Type1Guest(s, vfio, qemu, b);
    }

    private static void Type1Guest(ConformanceScenario s, VfioCore vfio, ProcessAddressSpace proc, PciDevice dev)
    {
        VfioContainer c = vfio.OpenContainer(proc, out _);
        Check(vfio.OpenGroup(proc, dev.IommuGroup!.Id, out VfioGroup? g, out _), "open group");
        Check(g!.SetContainer(c), "SET_CONTAINER");
        Check(c.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU), "SET_IOMMU");
        IDomain d = c.Backend!.Domains[0];

        ulong rw = Buffer(proc, 4 * K4, VmaKind.Anonymous);
        ulong ro = Buffer(proc, K4, VmaKind.Anonymous);
        ulong huge = Buffer(proc, M2, VmaKind.HugePage);
        ulong gone = Buffer(proc, 2 * K4, VmaKind.Anonymous);
        Map(s, c, d, rw, 0x1000_0000, 4 * K4, RW);
        Map(s, c, d, ro, 0x1010_0000, K4, IommuProt.Read);
        Map(s, c, d, huge, 0x2000_0000, M2, RW);
        Map(s, c, d, gone, 0x1020_0000, 2 * K4, RW);

        var unmap = new VfioIommuType1DmaUnmap(24, 0, 0x1020_0000, 2 * K4);
        Check(c.UnmapDma(ref unmap), "UNMAP_DMA");
        s.TrackUnmap(d, 0x1020_0000, 2 * K4);
        s.AddPoint(d, 0x1030_0000); // never mapped in this container
    }

    // A touched buffer of the process (shared with QemuGraderScenarioTests).
    internal static ulong Buffer(ProcessAddressSpace proc, ulong size, VmaKind kind)
    {
        ulong va = proc.Mmap(size, VmProt.ReadWrite, kind);
        Check(proc.Write(va, new byte[size]), "touch buffer");
        return va;
    }

    // VFIO_IOMMU_MAP_DMA of the buffer, tracked in the scenario, probed at its first and last 8 bytes (shared with QemuGraderScenarioTests).
    internal static void Map(ConformanceScenario s, VfioContainer c, IDomain d, ulong vaddr, ulong iova, ulong size, IommuProt prot)
    {
        uint flags = ((prot & IommuProt.Read) != 0 ? VfioUapi.VFIO_DMA_MAP_FLAG_READ : 0) | ((prot & IommuProt.Write) != 0 ? VfioUapi.VFIO_DMA_MAP_FLAG_WRITE : 0);
        Check(c.MapDma(new VfioIommuType1DmaMap(32, flags, vaddr, iova, size)), string.Create(CultureInfo.InvariantCulture, $"MAP_DMA iova 0x{iova:x}"));
        s.TrackMap(d, iova, size, prot);
        s.AddPoint(d, iova);
        s.AddPoint(d, iova + size - 8);
    }

    internal static void Check(Errno e, string what)
    {
        if (e != Errno.None)
        {
            throw new InvalidOperationException($"{what}: -{e}");
        }
    }

    private static void Legacy(ConformanceScenario s, bool full)
    {
        PciDevice a = s.Device("00:04.0");
        PciDevice c = s.Device("01:00.0");
        IDomain d1 = s.NewDomain();
        s.Attach(d1, a);
        s.Attach(d1, c);                                            // one domain, two buses
        CommonMaps(s, d1, 0x0400_0000);
        s.Map(d1, 0x4000_0000, 0, G1, RW, 0x0A00_0000, 0x0B12_3450); // 1 GiB page (PA 0; probed inside the guest's RAM)
        s.StrayRequester("00:05.0");                                 // no context entry
        s.StrayRequester("03:00.0");                                 // bus without a root entry
        if (full)
        {
            PciDevice b = s.Device("00:10.0");                       // devfn 0x80
            PciDevice dd = s.Device("02:00.0");
            IDomain d2 = s.NewDomain();
            s.Attach(d2, b);
            s.Map(d2, 0x1000_0000, 0x0500_0000, K4, RW);             // same IOVA as d1, other page
            s.Map(d2, 0x2000_0000, 0x0520_0000, M2, RW);
            s.AddPoint(d2, 0x1000_1000);                             // mapped in d1 only
            IDomain def = s.DefaultDomain(dd);                       // dd keeps its default DMA domain
            s.Map(def, 0x3000_0000, 0x0560_0000, K4, RW);
            s.Map(def, 0x3000_1000, 0xFEE0_0000, K4, RW);            // output in the interrupt range
            SharedAcrossWidths(s, d2);
        }

        // Fault processing disabled in a's context entry: qualified faults are not recorded.
        s.Patch("FPD in the context entry of 00:04.0", img => SetBits(img, img.ContextEntryAddress(a.RequesterId)!.Value, VtdFormat.Fpd), a);

        // A leaf PTE of all ones.
        s.Patch("all-ones leaf PTE at 0x1000_0000", img => AllOnesLeaf(img, a.RequesterId, 0x1000_0000), a, c);
    }

    private static void Scalable(ConformanceScenario s, bool full)
    {
        PciDevice a = s.Device("00:04.0", auxParent: true);          // default DMA domain + aux domains
        PciDevice c = s.Device("01:00.0");
        IDomain defA = s.DefaultDomain(a);
        CommonMaps(s, defA, 0x0400_0000);
        IDomain d1 = s.NewDomain();
        s.Attach(d1, c);
        s.Map(d1, 0x1000_0000, 0x0500_0000, K4, RW);
        s.Map(d1, 0x4000_0000, 0, G1, RW, 0x0A00_0000, 0x0B12_3450);
        IDomain aux1 = s.NewDomain();
        s.AttachAux(aux1, a);
        CommonMaps(s, aux1, 0x0600_0000);
        s.StrayRequester("00:05.0");
        s.StrayRequester("03:00.0");

        if (full)
        {
            PciDevice b = s.Device("00:10.0");                       // devfn 0x80: upper context table
            PciDevice dd = s.Device("02:00.0", auxParent: true);
            s.Attach(d1, b);
            IDomain aux2 = s.NewDomain();
            s.AttachAux(aux2, a);
            s.AttachAux(aux2, dd);                                   // one aux domain on two parents: one PASID
            s.Map(aux2, 0x1000_0000, 0x0700_0000, K4, RW);
            s.Map(aux2, 0x2000_0000, 0x0720_0000, M2, IommuProt.Read);
            s.AddPoint(aux2, 0x1000_1000);
            IDomain defD = s.DefaultDomain(dd);
            s.Map(defD, 0x3000_0000, 0x0760_0000, K4, RW);
            s.Map(defD, 0x3000_1000, 0xFEE0_0000, K4, RW);           // output in the interrupt range
            SharedAcrossWidths(s, d1);

            // RID_PASID pointing at PASIDs without an entry: 5 (table present, entry not) and 0x1000 (no directory entry).
            s.Patch("00:04.0 RID_PASID 5 (PASID entry not present)", img => SetRidPasid(img, a.RequesterId, 5), a);
            s.Patch("00:04.0 RID_PASID 0x1000 (PASID directory entry not present)", img => SetRidPasid(img, a.RequesterId, 0x1000), a);

            // FPD in the PASID entry of RID_PASID 0 of b.
            s.Patch("FPD in the PASID-0 entry of 00:10.0", img => SetBits(img, PasidEntry(img, b.RequesterId, 0), VtdFormat.Fpd), b);
        }

        s.Patch("FPD in the context entry of 01:00.0", img => SetBits(img, img.ContextEntryAddress(c.RequesterId)!.Value, VtdFormat.Fpd), c);
        s.Patch("all-ones leaf PTE at 0x1000_0000", img => AllOnesLeaf(img, a.RequesterId, 0x1000_0000), a);
    }

    private static VtdImage SetBits(VtdImage img, ulong pa, ulong bits) => img.WithUInt64(pa, img.ReadUInt64(pa) | bits);

    private static VtdImage SetRidPasid(VtdImage img, ushort rid, uint pasid)
    {
        ulong ctx = img.ContextEntryAddress(rid)!.Value;
        return img.WithUInt64(ctx + 8, (img.ReadUInt64(ctx + 8) & ~VtdFormat.ScalableContextRidPasidMask) | pasid);
    }

    private static ulong PasidEntry(VtdImage img, ushort rid, uint pasid) =>
        img.Path(rid, pasid, 0).Single(e => e.Kind == VtdImageChunkKind.PasidTable).Address;

    private static VtdImage AllOnesLeaf(VtdImage img, ushort rid, ulong iova)
    {
        VtdImageEntry leaf = img.Path(rid, null, iova)[^1];
        if (leaf.Kind != VtdImageChunkKind.PageTable || leaf.Level != 1)
        {
            throw new InvalidOperationException("expected a 4 KiB leaf");
        }

        return img.WithUInt64(leaf.Address, ulong.MaxValue);
    }
}
