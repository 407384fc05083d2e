using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>Configurations and checks shared by the driver behaviour tests.</summary>
internal static class DriverTestKit
{
    public const ulong K4 = 4096, M2 = 2UL << 20, G1 = 1UL << 30;
    public const IommuProt RW = IommuProt.Read | IommuProt.Write;

    /// <summary>Small memory for most tests: 8 GiB of (sparsely backed) physical memory.</summary>
    public const ulong SmallMemory = 8 * Sizes.GiB;

    public static readonly string[] AllConfigNames =
    [
        "Legacy39", "Legacy48", "Sm48", "Sm57",
        "Legacy39Cm", "Legacy48Cm", "Sm48Cm", "Sm57Cm",
        "Legacy48NoQi", "Sm48NoQi", "Sm48CmNoQi", "Legacy39NoPsi",
    ];

    public static readonly string[] ScalableConfigNames = ["Sm48", "Sm57", "Sm48Cm", "Sm57Cm"];

    public static VtdConfig Config(string name) => name switch
    {
        "Legacy39" => VtdConfig.Legacy39Bit,
        "Legacy48" => VtdConfig.Legacy48Bit,
        "Sm48" => VtdConfig.ScalableMode48Bit,
        "Sm57" => VtdConfig.ScalableMode57Bit,
        "Legacy39Cm" => VtdConfig.Legacy39Bit with { CachingMode = true },
        "Legacy48Cm" => VtdConfig.Legacy48Bit with { CachingMode = true },
        "Sm48Cm" => VtdConfig.ScalableMode48Bit with { CachingMode = true },
        "Sm57Cm" => VtdConfig.ScalableMode57Bit with { CachingMode = true },
        "Legacy48NoQi" => VtdConfig.Legacy48Bit with { QueuedInvalidation = false },
        "Sm48NoQi" => VtdConfig.ScalableMode48Bit with { QueuedInvalidation = false },
        "Sm48CmNoQi" => VtdConfig.ScalableMode48Bit with { QueuedInvalidation = false, CachingMode = true },
        "Legacy39NoPsi" => VtdConfig.Legacy39Bit with { PageSelectiveInvalidation = false, CachingMode = true },
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "unknown config"),
    };

    /// <summary>Address width the driver must use with a unit of this configuration.</summary>
    public static int Width(VtdConfig c) => c.Supports57BitTables && c.MaxGuestAddressWidth >= 57 ? 57 : c.Supports48BitTables && c.MaxGuestAddressWidth >= 48 ? 48 : 39;

    public static TheoryData<string> Configs()
    {
        var d = new TheoryData<string>();
        foreach (string n in AllConfigNames)
        {
            d.Add(n);
        }

        return d;
    }

    public static TheoryData<string> ScalableConfigs()
    {
        var d = new TheoryData<string>();
        foreach (string n in ScalableConfigNames)
        {
            d.Add(n);
        }

        return d;
    }

    public static DriverBed New(string config, ulong memory = SmallMemory) => new(Config(config), memory: memory);

    public static IDomain Unmanaged(this DriverBed f) => f.Iommu.DomainAlloc(f.Pci) ?? throw new InvalidOperationException("domain alloc failed");

    /// <summary>A device with PASID and the SIOV DVSEC, AUX enabled.</summary>
    public static PciDevice AuxParent(this DriverBed f, string bdf, int pasidWidth = 20)
    {
        PciDevice dev = f.AddDevice(bdf, pasidWidth: pasidWidth, siov: true);
        Assert.Equal(Errno.None, f.Iommu.SetDevAttr(dev, IommuDevAttr.AuxdEnable));
        return dev;
    }

    private static ulong s_tag = 0x5A5A_0000_0000_0000;

    /// <summary>
    /// DMA-writes a fresh tag at <paramref name="iova"/> and checks it landed at <paramref name="expectedPa"/>
    /// (and reads back through the IOMMU); with <paramref name="expectedPa"/> 0, checks the write and a read fault.
    /// </summary>
    public static void AssertDma(this DriverBed f, PciDevice dev, uint? pasid, ulong iova, ulong expectedPa, string because = "")
    {
        ulong tag = Interlocked.Increment(ref s_tag);
        DmaResult w = f.Write(dev, pasid, iova, tag);
        Span<byte> buf = stackalloc byte[8];
        DmaResult r = dev.DmaRead(pasid, iova, buf);
        if (expectedPa == 0)
        {
            Assert.True(w.Status == DmaStatus.Fault, $"DMA write to iova 0x{iova:x} (pasid {P(pasid)}) should fault but was {w} {because}");
            Assert.True(r.Status == DmaStatus.Fault, $"DMA read of iova 0x{iova:x} (pasid {P(pasid)}) should fault but was {r} {because}");
            return;
        }

        Assert.True(w.IsOk, $"DMA write to iova 0x{iova:x} (pasid {P(pasid)}) should reach 0x{expectedPa:x} but was {w} {because}");
        Assert.True(f.Platform.Memory.ReadUInt64(expectedPa) == tag, $"DMA write to iova 0x{iova:x} did not land at 0x{expectedPa:x} (went to 0x{w.Address:x}) {because}");
        Assert.True(r.IsOk, $"DMA read of iova 0x{iova:x} failed: {r} {because}");
        Assert.Equal(tag, BitConverter.ToUInt64(buf));
    }

    private static string P(uint? pasid) => pasid is uint p ? p.ToString(System.Globalization.CultureInfo.InvariantCulture) : "-";

    /// <summary>DMA at <paramref name="iova"/> agrees with iova_to_phys of <paramref name="dom"/>.</summary>
    public static void AssertDmaMatchesIovaToPhys(this DriverBed f, IDomain dom, PciDevice dev, uint? pasid, ulong iova, string because = "")
        => f.AssertDma(dev, pasid, iova, f.Iommu.IovaToPhys(dom, iova), because);

    /// <summary>Hardware translation of one byte (does not move data).</summary>
    public static VtdTranslation Hw(this DriverBed f, PciDevice dev, uint? pasid, ulong iova, DmaAccess access = DmaAccess.Read)
        => f.Unit.Translate(dev.RequesterId, pasid, iova, 1, access);

    public static List<(ulong Iova, ulong Pa, ulong Size)> Leaves(IDomain dom)
    {
        var list = new List<(ulong, ulong, ulong)>();
        ((DmarDomain)dom).PageTable.ForEachLeaf((i, p, s, _) => list.Add((i, p, s)));
        return list;
    }
}
