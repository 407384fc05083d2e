using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// What first-level tests observe, read the way the hardware reads it: PASID entries found from the root
/// table register, and the invalidation descriptors the driver put in the queue (its own bit positions,
/// not the driver's or the hardware's code).
/// </summary>
internal static class FirstLevelTestKit
{
    public const int DescPiotlb = 6, DescPasidCache = 7, DescIotlb = 2, DescWait = 5;

    public static VtdConfig FlConfig(string name) => name switch
    {
        "Fl48" => VtdConfig.ScalableModeFirstLevel48Bit,
        "Fl57" => VtdConfig.ScalableModeFirstLevel57Bit,
        "Fl48Cm" => VtdConfig.ScalableModeFirstLevel48Bit with { CachingMode = true },
        "Fl48Coherent" => VtdConfig.ScalableModeFirstLevel48Bit with { PageWalkCoherency = true },
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "unknown config"),
    };

    public static DriverBed NewFl(string config, FirstLevelPolicy policy = FirstLevelPolicy.FirstLevelByDefault) =>
        new(FlConfig(config), new IntelIommuOptions { FirstLevel = policy }, memory: DriverTestKit.SmallMemory);

    public static DriverBed NewFl(VtdConfig config, FirstLevelPolicy policy = FirstLevelPolicy.FirstLevelByDefault) =>
        new(config, new IntelIommuOptions { FirstLevel = policy }, memory: DriverTestKit.SmallMemory);

    public static DmarDomain DmaDomain(this DriverBed f) =>
        (DmarDomain)(f.Iommu.DomainAllocType(f.Pci, DomainType.Dma) ?? throw new InvalidOperationException("domain alloc failed"));

    /// <summary>The 64-byte PASID entry of (<paramref name="dev"/>, <paramref name="pasid"/>) as eight words, or null when the structures do not reach it.</summary>
    public static ulong[]? PasidEntry(this DriverBed f, PciDevice dev, uint pasid)
    {
        ulong root = f.Unit.Read64(0x20) & ~0xFFFUL;
        ulong re = f.Platform.Memory.ReadUInt64(root + (dev.BusNumber * 16UL) + (dev.DevFn >= 128 ? 8UL : 0));
        if ((re & 1) == 0)
        {
            return null;
        }

        ulong ce = (re & ~0xFFFUL) + ((dev.DevFn & 0x7FUL) * 32);
        ulong c0 = f.Platform.Memory.ReadUInt64(ce);
        if ((c0 & 1) == 0)
        {
            return null;
        }

        ulong pde = f.Platform.Memory.ReadUInt64((c0 & ~0xFFFUL) + ((pasid >> 6) * 8UL));
        if ((pde & 1) == 0)
        {
            return null;
        }

        ulong pe = (pde & ~0xFFFUL) + ((pasid & 63UL) * 64);
        var words = new ulong[8];
        for (int i = 0; i < 8; i++)
        {
            words[i] = f.Platform.Memory.ReadUInt64(pe + ((ulong)i * 8));
        }

        return words;
    }

    /// <summary>The driver's DID for <paramref name="d"/> on the bed's unit.</summary>
    public static ushort Did(DmarDomain d) => d.DidOn(0);

    /// <summary>Descriptors submitted to a unit's invalidation queue since <see cref="Mark"/> (wait descriptors left out).</summary>
    public sealed class QiTrace(DriverBed bed)
    {
        private ulong _tail = bed.Unit.Read64(0x88);

        public void Mark() => _tail = bed.Unit.Read64(0x88);

        public List<(int Type, ulong Q0, ulong Q1)> Since()
        {
            ulong iqa = bed.Unit.Read64(0x90);
            ulong queue = iqa & ~0xFFFUL;
            ulong size = 4096UL << (int)(iqa & 7);
            ulong end = bed.Unit.Read64(0x88);
            var list = new List<(int, ulong, ulong)>();
            for (ulong at = _tail; at != end; at = (at + 32) % size)
            {
                ulong q0 = bed.Platform.Memory.ReadUInt64(queue + at);
                ulong q1 = bed.Platform.Memory.ReadUInt64(queue + at + 8);
                int type = (int)(q0 & 0xF);
                if (type != DescWait)
                {
                    list.Add((type, q0, q1));
                }
            }

            _tail = end;
            return list;
        }
    }

    /// <summary>q0 of a P_IOTLB descriptor: type 6, G 5:4, DID 31:16, PASID 51:32.</summary>
    public static ulong PiotlbQ0(ushort did, uint pasid, int g) => DescPiotlb | ((ulong)g << 4) | ((ulong)did << 16) | ((ulong)pasid << 32);

    /// <summary>q0 of a PASID-cache descriptor: type 7, G 5:4, DID 31:16, PASID 51:32.</summary>
    public static ulong PasidCacheQ0(ushort did, uint pasid, int g) => DescPasidCache | ((ulong)g << 4) | ((ulong)did << 16) | ((ulong)pasid << 32);
}
