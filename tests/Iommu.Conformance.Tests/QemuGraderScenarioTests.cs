using System.Globalization;
using Iommu.Conformance.Tests.Qemu;
using Iommu.Conformance.Tests.Scenarios;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Hardware;
using Vfio.Type1;
using Vfio.Type1.Uapi;
using Xunit.Abstractions;

namespace Iommu.Conformance.Tests;

/// <summary>
/// Scenarios an outside grader builds with the public API only (IommuCore, VFIO type1, the documented image export)
/// and the random generator does not produce: several functions of one slot in different domains, a device moved
/// between domains and its old domain freed (the next domain takes the lowest free DID, as 5.15's find_first_zero_bit),
/// 4 KiB / 2 MiB / 1 GiB leaves side by side, across 1 GiB boundaries and at the top of the width, superpages refused
/// for misaligned IOVA or PA, part of a superpage unmapped, identity devices beside translated ones, one page at many
/// IOVAs with every permission, one VFIO container for two groups. Each is run through QEMU 7.2 (every probe a real
/// edu DMA) and against the driver's own view; the page sizes and DIDs 5.15 would program are checked on the image.
/// </summary>
public sealed class QemuGraderScenarioTests(ITestOutputHelper output)
{
    private const ulong K4 = ScenarioCatalog.K4, M2 = ScenarioCatalog.M2, G1 = ScenarioCatalog.G1;
    private const IommuProt RW = ScenarioCatalog.RW, RO = IommuProt.Read, WO = IommuProt.Write;

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (string config in (string[])["legacy-4level", "legacy-3level", "scalable-4level", "scalable-3level"])
        {
            foreach (string kind in (string[])["functions", "move-free-reuse", "superpages", "identity-beside-translated", "aliases", "vfio-one-container"])
            {
                data.Add(kind, config);
            }
        }

        return data;
    }

    [QemuTheory]
    [MemberData(nameof(Cases))]
    public void Grader_scenario_walks_the_same_in_qemu_in_the_model_and_in_the_driver(string kind, string config)
    {
        string qemu = QtestClient.FindQemu() ?? throw new InvalidOperationException("CI=true but qemu-system-x86_64 is not installed: .ci/run must install Debian's qemu-system-x86.");
        using ConformanceScenario s = Build(kind, config, out Action<VtdImage> checkImage);
        IReadOnlyList<ScenarioPhase> phases = s.Build();
        int compared = ImageExportTests.CompareWithDriver(phases);
        checkImage(phases[0].Image);
        int dropped = 0;
        ConformanceReport r = ConformanceRunner.RunScenario(qemu, s, ref dropped);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{kind} {config}: {r.Probes} probes in QEMU ({r.DataVerified} data checked, {r.FaultsCompared} fault records compared, {r.WithQemuDifference} under a QEMU 7.2 difference, {dropped} outside guest RAM not run), {compared} compared with the driver; differences: {string.Join("; ", r.DifferencesUsed)}"));
        Assert.True(r.Mismatches.Count == 0, $"{r.Mismatches.Count} of {r.Probes} probes disagree with QEMU in {kind} {config}:\n{string.Join('\n', r.Mismatches.Take(40))}");
        Assert.True(r.DataVerified > 0 && r.FaultsCompared > 0, $"{kind} {config}: {r.DataVerified} data checks, {r.FaultsCompared} fault records");
    }

    private static ConformanceScenario Build(string kind, string config, out Action<VtdImage> check)
    {
        var s = new ConformanceScenario("grader-" + kind + "-" + config, ScenarioCatalog.Config(config),
            defaultDomain: kind == "identity-beside-translated" ? DomainType.Identity : DomainType.Dma);
        try
        {
            check = kind switch
            {
                "functions" => Functions(s),
                "move-free-reuse" => MoveFreeReuse(s),
                "superpages" => Superpages(s),
                "identity-beside-translated" => IdentityBesideTranslated(s),
                "aliases" => Aliases(s),
                "vfio-one-container" => VfioOneContainer(s),
                _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown grader scenario"),
            };
            return s;
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    // Functions 0, 1 and 5 of slot 4 (one context table, adjacent entries), functions 0 and 3 of slot 0x13 (devfn 0x98+:
    // the upper scalable context table), buses 1 and 2, in four domains and default ones; the same IOVA reaches another
    // page in each; a function of the multi-function slot is hot-removed while its siblings keep translating.
    private static Action<VtdImage> Functions(ConformanceScenario s)
    {
        PciDevice a0 = s.Device("00:04.0"), a1 = s.Device("00:04.1"), a5 = s.Device("00:04.5");
        PciDevice b0 = s.Device("00:13.0"), b3 = s.Device("00:13.3"), c = s.Device("01:00.0"), e = s.Device("02:00.0");
        IDomain dA = s.NewDomain(), dB = s.NewDomain(), dC = s.NewDomain();
        s.Attach(dA, a0);
        s.Attach(dB, a1);
        s.Attach(dC, b3);
        s.Attach(dC, c);
        s.Map(dA, 0x1000_0000, 0x0400_0000, K4, RW);
        s.Map(dA, 0x1000_2000, 0x0400_2000, K4, RW);
        s.Map(dB, 0x1000_0000, 0x0410_0000, K4, RW);
        s.Map(dB, 0x1000_1000, 0x0410_1000, K4, RO);
        s.Map(dC, 0x1000_0000, 0x0420_0000, K4, RW);
        s.Map(dC, 0x2000_0000, 0x0440_0000, M2, RW);
        IDomain defA5 = s.DefaultDomain(a5), defE = s.DefaultDomain(e);
        s.Map(defA5, 0x1000_0000, 0x0460_0000, K4, RW);
        s.Map(defE, 0x1000_0000, 0x0470_0000, K4, RW);
        foreach (IDomain d in (IDomain[])[dA, dB, dC, defA5, defE, s.DefaultDomain(b0)])
        {
            s.AddPoint(d, 0x1000_0000);
            s.AddPoint(d, 0x1000_1000);
            s.AddPoint(d, 0x1000_2000);
            s.AddPoint(d, 0x2000_0000);
        }

        s.HotRemove(a5);
        return img =>
        {
            AssertDids(img, s, (a0, dA), (a1, dB), (b3, dC), (c, dC), (b0, null), (e, null));
            Assert.Null(PresentContext(img, a5.RequesterId));
        };
    }

    // x: d1 → d2, d1 freed; the next domain (d3, on y) takes the lowest free DID (5.15 find_first_zero_bit); z joins d3,
    // then moves to d2; x goes back to its default domain. Old IOVAs are probed on every device.
    private static Action<VtdImage> MoveFreeReuse(ConformanceScenario s)
    {
        PciDevice x = s.Device("00:04.0"), y = s.Device("00:06.0"), z = s.Device("01:00.0");
        IDomain d1 = s.NewDomain();
        s.Attach(d1, x);
        s.Map(d1, 0x1000_0000, 0x0400_0000, K4, RW);
        s.Map(d1, 0x2000_0000, 0x0420_0000, M2, RW);
        ushort d1Did = Did(s.Driver.ExportImage(), s, x.RequesterId);

        IDomain d2 = s.NewDomain();
        s.Iommu.DetachDevice(d1, x);
        s.Attach(d2, x);
        ushort d2Did = Did(s.Driver.ExportImage(), s, x.RequesterId);
        s.Map(d2, 0x1000_0000, 0x0440_0000, K4, RO);
        s.Map(d2, 0x3000_0000, 0x0450_0000, K4, RW);
        s.Iommu.DomainFree(d1);

        // 5.15 intel_iommu_attach_device removes y from its default domain (dmar_remove_one_dev_info frees that DID, y
        // being its only device) before domain_attach_iommu picks the lowest free DID for d3.
        ushort lowestFree = LowestFreeDid(s.Driver.ExportImage(), s, except: y.RequesterId);
        IDomain d3 = s.NewDomain();
        s.Attach(d3, y);
        ushort d3Did = Did(s.Driver.ExportImage(), s, y.RequesterId);
        s.Map(d3, 0x1000_0000, 0x0460_0000, K4, RW);
        s.Map(d3, 0x2000_0000, 0x0480_0000, M2, RO);
        s.Attach(d3, z);
        s.Iommu.DetachDevice(d3, z);
        s.Attach(d2, z);
        s.Iommu.DetachDevice(d2, x);
        IDomain defX = s.DefaultDomain(x);
        s.Map(defX, 0x3000_0000, 0x04A0_0000, K4, RW);
        foreach (IDomain d in (IDomain[])[d2, d3, defX, s.DefaultDomain(y), s.DefaultDomain(z)])
        {
            foreach (ulong iova in (ulong[])[0x1000_0000, 0x1000_0ff8, 0x2000_0000, 0x201F_FFF8, 0x3000_0000])
            {
                s.AddPoint(d, iova);
            }
        }

        return img =>
        {
            Assert.Equal(lowestFree, d3Did);
            // x left d1 for its default domain (d1's DID freed, the default took it), then left that for d2: d2 has d1's DID.
            Assert.True(d2Did == d1Did, $"d2 has DID {d2Did}, not d1's {d1Did} that x's two moves freed");
            Assert.Equal(d2Did, Did(img, s, z.RequesterId));
            AssertDids(img, s, (x, null), (y, d3), (z, d2));
        };
    }

    // 4 KiB below a 1 GiB boundary, a 1 GiB page above it, a 2 MiB page and a read-only 4 KiB page after it; 2 MiB maps
    // whose IOVA or PA is only 4 KiB aligned (4 KiB leaves), 2 MiB + 8 KiB (one 2 MiB leaf, two 4 KiB), 4 KiB inside
    // the middle of three 2 MiB leaves and 2 MiB inside a 1 GiB leaf unmapped (the whole leaf goes), the last 4 KiB,
    // 2 MiB and 1 GiB below the top of the width, and maps across the top refused (-EFAULT, intel_iommu_map).
    private static Action<VtdImage> Superpages(ConformanceScenario s)
    {
        PciDevice a = s.Device("00:04.0"), c = s.Device("01:00.0");
        IDomain d = s.NewDomain();
        s.Attach(d, a);
        s.Attach(d, c);
        ulong top = d.Geometry.ApertureEnd + 1;
        s.Map(d, 0x3FFF_F000, 0x0400_0000, K4, RW);
        s.Map(d, 0x4000_0000, 0, G1, RW, 0x0500_0000, 0x0500_0ff8); // PA 0: offset 0 would read as unmapped to iova_to_phys
        s.Map(d, 0x8000_0000, 0x0460_0000, M2, RW);
        s.Map(d, 0x8020_0000, 0x0401_0000, K4, RO);
        s.Map(d, 0xA000_0000, 0x0480_1000, M2, RW);             // PA 4 KiB aligned only
        s.Map(d, 0xA040_1000, 0x04A0_0000, M2, RW);             // IOVA 4 KiB aligned only
        s.Map(d, 0xA080_0000, 0x04C0_0000, M2 + (2 * K4), RW, 0, M2 - 8, M2, M2 + K4 + 0xff8);
        s.Map(d, 0x9000_0000, 0x0500_0000, 3 * M2, RW);
        s.Unmap(d, 0x9020_8000, K4, removedIova: 0x9020_0000, removedSize: M2);
        s.AddPoint(d, 0x901F_FFF8);
        s.AddPoint(d, 0x9040_0000);
        s.Map(d, 0xC000_0000, 0, G1, RO, 0x0500_0000, 0x0600_0000);
        s.Unmap(d, 0xC020_0000, M2, removedIova: 0xC000_0000, removedSize: G1);
        s.Map(d, top - K4, 0x0402_0000, K4, RW);
        s.Map(d, top - (2 * M2), 0x0520_0000, M2, RW);
        s.Map(d, top - (2 * G1), 0, G1, RW, 0x0500_0000, 0x05FF_FFF8);
        ConformanceScenario.Expect(Errno.EFAULT, s.Iommu.Map(d, top - K4, 0x0403_0000, 2 * K4, RW), "map across the top of the width");
        ConformanceScenario.Expect(Errno.EFAULT, s.Iommu.Map(d, top, 0x0403_0000, K4, RW), "map at the top of the width");
        s.AddPoint(d, top - 8);
        s.AddPoint(d, top - K4 - 8);
        return img =>
        {
            ExpectPage(img, a, 0x3FFF_F000, K4);
            ExpectPage(img, a, 0x4500_0000, G1);
            ExpectPage(img, c, 0x8000_0000, M2);
            ExpectPage(img, c, 0x8020_0000, K4);
            ExpectPage(img, a, 0xA000_0000, K4);
            ExpectPage(img, a, 0xA040_1000, K4);
            ExpectPage(img, a, 0xA080_0000, M2);
            ExpectPage(img, a, 0xA080_0000 + M2 + K4 + 0xff8, K4);
            ExpectPage(img, a, 0x9000_0000, M2);
            ExpectPage(img, a, 0x9040_0000, M2);
            ExpectPage(img, a, top - K4, K4);
            ExpectPage(img, a, top - (2 * M2), M2);
            ExpectPage(img, a, top - (2 * G1) + 0x0500_0000, G1);
        };
    }

    // Identity default domains (TT=10 / PGTT=100) for functions 0 and 2 of slot 4 and bus 2, function 1 and bus 1 in
    // a paging domain; bus 1 goes back to identity, bus 2 is hot-removed. The same IOVAs reach the page they name on an
    // identity device and the mapped page on the translated one.
    private static Action<VtdImage> IdentityBesideTranslated(ConformanceScenario s)
    {
        PciDevice i0 = s.Device("00:04.0"), t1 = s.Device("00:04.1"), i2 = s.Device("00:04.2"), c = s.Device("01:00.0"), e = s.Device("02:00.0");
        IDomain identity = s.Iommu.GetDomainForDev(i0) ?? throw new InvalidOperationException("no default domain");
        Assert.Equal(DomainType.Identity, identity.Type);
        IDomain d = s.NewDomain();
        s.Attach(d, t1);
        s.Attach(d, c);
        s.Map(d, 0x0600_0000, 0x0800_0000, K4, RW);
        s.Map(d, 0x0600_1000, 0x0800_1000, K4, RO);
        s.Map(d, 0x0A00_0000, 0x0C00_0000, M2, RW);
        s.Iommu.DetachDevice(d, c);
        s.HotRemove(e);
        foreach (ulong iova in (ulong[])[0x0600_0000, 0x0600_1000, 0x0800_0000, 0x0A10_0000, 0x0C00_0000])
        {
            s.AddPoint(identity, iova);
            s.AddPoint(d, iova);
        }

        return img =>
        {
            Assert.Same(identity, s.Iommu.GetDomainForDev(c));
            Assert.Null(PresentContext(img, e.RequesterId));
            ExpectPage(img, t1, 0x0A10_0000, M2);
            AssertDids(img, s, (i0, identity), (i2, identity), (c, identity), (t1, d));
        };
    }

    // One page at many IOVAs of two domains with read/write, read-only and write-only (5.15: leaf R+W) maps, in
    // different top-level entries (IOVA 0, the top of the 39-bit space, above 512 GiB on a 4-level domain), inside a
    // 2 MiB page and beside it.
    private static Action<VtdImage> Aliases(ConformanceScenario s)
    {
        PciDevice a = s.Device("00:04.0"), c = s.Device("01:00.0");
        IDomain d1 = s.NewDomain(), d2 = s.NewDomain();
        s.Attach(d1, a);
        s.Attach(d2, c);
        const ulong P = 0x0400_0000;
        IommuProt[] prots = [RW, RO, WO];
        for (int i = 0; i < 9; i++)
        {
            s.Map(d1, 0x1000_0000 + ((ulong)i * K4), P, K4, prots[i % 3], 0, 0xff8);
        }

        bool wide = d1.Geometry.ApertureEnd >= (1UL << 40) - 1;
        s.Map(d1, 0, P, K4, RW, 0, 0xff8);
        s.Map(d1, (1UL << 39) - K4, P, K4, RO, 0, 0xff8);
        if (wide)
        {
            s.Map(d1, 1UL << 39, P, K4, WO, 0, 0xff8);
            s.Map(d1, d1.Geometry.ApertureEnd + 1 - K4, P, K4, RW, 0, 0xff8);
        }

        s.Map(d1, 0x4000_0000, P, M2, RO, 0, 0x1000, M2 - 8);    // a 2 MiB page whose first 4 KiB is P …
        s.Map(d1, 0x5000_0000, P + K4, K4, RW, 0);                // … and its second page through a 4 KiB alias
        s.Map(d1, 0x1100_0000, 0x0410_0000, K4, RW);              // another page (reads come back through it)
        s.Map(d2, 0x1000_0000, P, K4, RO);
        s.Map(d2, 0x3000_0000, P, K4, RW);
        s.Map(d2, 0x3000_1000, P, K4, WO);
        return img =>
        {
            ExpectPage(img, a, 0x4000_1000, M2);
            Assert.Equal(P, img.Probes.Single(p => p.Probe.RequesterId == c.RequesterId && p.Probe.Iova == 0x3000_1000 && p.Probe.Access == DmaAccess.Read).PhysicalAddress);
        };
    }

    // QEMU's own VFIO use: one container, two groups (both on one domain: one DID), guest RAM of anonymous 4 KiB pages
    // with a hugetlb 2 MiB page between them, one MAP_DMA read-only; UNMAP_DMA of one mapping leaves its neighbours.
    private static Action<VtdImage> VfioOneContainer(ConformanceScenario s)
    {
        PciDevice a = s.Device("00:04.0"), c = s.Device("01:00.0");
        var vfio = new VfioCore(s.Platform, new VfioType1Options { AllowUnsafeInterrupts = true });
        Check(vfio.RegisterDevice(a), "register 00:04.0");
        Check(vfio.RegisterDevice(c), "register 01:00.0");
        var pages = HostPageAllocator.ForPlatform(s.Platform, 0x0800_0000, 64 * Sizes.MiB);
        var proc = new ProcessAddressSpace(pages, "qemu");
        VfioContainer container = vfio.OpenContainer(proc, out _);
        foreach (PciDevice dev in (PciDevice[])[a, c])
        {
            Check(vfio.OpenGroup(proc, dev.IommuGroup!.Id, out VfioGroup? g, out _), "open group");
            Check(g!.SetContainer(container), "SET_CONTAINER");
            if (dev == a)
            {
                Check(container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU), "SET_IOMMU");
            }
        }

        Assert.Single(container.Backend!.Domains);
        IDomain d = container.Backend.Domains[0];
        ulong low = Buffer(proc, 4 * K4, VmaKind.Anonymous), huge = Buffer(proc, M2, VmaKind.HugePage), high = Buffer(proc, 2 * K4, VmaKind.Anonymous), ro = Buffer(proc, K4, VmaKind.Anonymous);
        MapDma(s, container, d, low, 0x1FFF_C000, 4 * K4, RW);
        MapDma(s, container, d, huge, 0x2000_0000, M2, RW);
        MapDma(s, container, d, high, 0x2020_0000, 2 * K4, RW);
        MapDma(s, container, d, ro, 0x2030_0000, K4, RO);
        var unmap = new VfioIommuType1DmaUnmap(24, 0, 0x2020_0000, 2 * K4);
        Check(container.UnmapDma(ref unmap), "UNMAP_DMA");
        s.TrackUnmap(d, 0x2020_0000, 2 * K4);
        s.AddPoint(d, 0x2020_0000);
        s.AddPoint(d, 0x2020_1ff8);
        return img =>
        {
            ExpectPage(img, a, 0x2000_0000, M2);
            ExpectPage(img, c, 0x1FFF_FFF8, K4);
            AssertDids(img, s, (a, d), (c, d));
        };
    }

    private static ulong Buffer(ProcessAddressSpace proc, ulong size, VmaKind kind) => ScenarioCatalog.Buffer(proc, size, kind);

    // The catalog's map, also probed just past the end (the next page is not mapped).
    private static void MapDma(ConformanceScenario s, VfioContainer c, IDomain d, ulong vaddr, ulong iova, ulong size, IommuProt prot)
    {
        ScenarioCatalog.Map(s, c, d, vaddr, iova, size, prot);
        s.AddPoint(d, iova + size);
    }

    private static void Check(Errno e, string what) => ScenarioCatalog.Check(e, what);

    private static void ExpectPage(VtdImage img, PciDevice dev, ulong iova, ulong pageSize)
    {
        VtdProbeResult r = img.Probes.FirstOrDefault(p => p.Probe.RequesterId == dev.RequesterId && p.Probe.Iova == iova && p.IsTranslated)
            ?? throw new Xunit.Sdk.XunitException($"no translated probe of {dev.Name} at 0x{iova:x}");
        Assert.True(r.PageSize == pageSize, $"{dev.Name} 0x{iova:x}: page 0x{r.PageSize:x}, expected 0x{pageSize:x} (5.15 uses a superpage only where IOVA, PA and size allow it)");
    }

    // The legacy context entry (present), or the scalable RID_PASID entry's, value pair; null when not present.
    private static (ulong Q0, ulong Q1)? PresentContext(VtdImage img, ushort rid)
    {
        if (img.ContextEntryAddress(rid) is not ulong ctx || (img.ReadUInt64(ctx) & 1) == 0)
        {
            return null;
        }

        return (img.ReadUInt64(ctx), img.ReadUInt64(ctx + 8));
    }

    // The DID the unit tags the requester's untagged DMA with: legacy context entry bits 87:72, scalable RID_PASID entry bits 79:64.
    private static ushort Did(VtdImage img, ConformanceScenario s, ushort rid)
    {
        (ulong _, ulong q1) = PresentContext(img, rid) ?? throw new Xunit.Sdk.XunitException($"{ConformanceScenario.Bdf(rid)} has no context entry");
        if (!s.Scalable)
        {
            return (ushort)(q1 >> VtdFormat.ContextDidShift);
        }

        ulong pe = img.Path(rid, null, 0).Single(e => e.Kind == VtdImageChunkKind.PasidTable).Address;
        return (ushort)(img.ReadUInt64(pe + 8) & VtdFormat.PasidDidMask);
    }

    // 5.15 find_first_zero_bit over the unit's DIDs: 0 reserved, 1 too in scalable mode (FLPT_DEFAULT_DID); the others
    // are the DIDs in the requesters' entries (scenarios without aux domains: every DID of the unit shows there) but
    // <paramref name="except"/>'s, whose domain the attach gives up first.
    private static ushort LowestFreeDid(VtdImage img, ConformanceScenario s, ushort except)
    {
        var used = new HashSet<ushort> { 0 };
        if (s.Scalable)
        {
            used.Add(1);
        }

        foreach (PciLocation r in s.Requesters)
        {
            if (r.DmaRequesterId != except && PresentContext(img, r.DmaRequesterId) is not null)
            {
                used.Add(Did(img, s, r.DmaRequesterId));
            }
        }

        ushort did = 0;
        while (used.Contains(did))
        {
            did++;
        }

        return did;
    }

    // Devices on one domain share its DID, devices on different domains have different DIDs; null: the device's current domain.
    private static void AssertDids(VtdImage img, ConformanceScenario s, params (PciDevice Dev, IDomain? Domain)[] devices)
    {
        var byDomain = new Dictionary<IDomain, ushort>(ReferenceEqualityComparer.Instance);
        foreach ((PciDevice dev, IDomain? want) in devices)
        {
            IDomain dom = s.Iommu.GetDomainForDev(dev) ?? throw new Xunit.Sdk.XunitException($"{dev.Name} has no domain");
            if (want is not null)
            {
                Assert.Same(want, dom);
            }

            ushort did = Did(img, s, dev.RequesterId);
            if (byDomain.TryGetValue(dom, out ushort other))
            {
                Assert.True(other == did, $"{dev.Name}: DID {did}, another device of its domain has {other}");
            }
            else
            {
                Assert.True(!byDomain.ContainsValue(did) || (s.Scalable && did == 1 && dom.Type == DomainType.Identity), $"{dev.Name}: DID {did} is another domain's");
                byDomain[dom] = did;
            }
        }
    }
}
