using Iommu.Devices;
using Iommu.Domains;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Diagnostics;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.Reliability.Tests.BadInput.Rows;

namespace Iommu.Reliability.Tests.BadInput;

internal static partial class BadInputMatrix
{
    /// <summary>Iommu.VtD: the hardware unit, its configuration, the driver, the image exporter.</summary>
    private static IEnumerable<BadInputRow> VtD() =>
    [
        // VtdUnit
        X<ArgumentNullException>("VtdUnit..ctor", "null memory", _ => new VtdUnit(null!, VtdConfig.Legacy39Bit)),
        X<ArgumentNullException>("VtdUnit..ctor", "null config", c => new VtdUnit(c.Memory, null!)),
        X<ArgumentException>("VtdUnit..ctor", "no supported table depth", c => new VtdUnit(c.Memory, VtdConfig.Legacy39Bit with { Supports39BitTables = false, Supports48BitTables = false })),
        X<ArgumentException>("VtdUnit..ctor", "host address width 70", c => new VtdUnit(c.Memory, VtdConfig.Legacy39Bit with { HostAddressWidth = 70 })),
        X<ArgumentOutOfRangeException>("VtdUnit.Read32", "unaligned offset", c => c.Unit.Read32(0x2)),
        X<ArgumentOutOfRangeException>("VtdUnit.Read32", "offset past the register file", c => c.Unit.Read32(0x10_0000)),
        X<ArgumentOutOfRangeException>("VtdUnit.Read32", "offset 2^32-4 (overflow)", c => c.Unit.Read32(uint.MaxValue - 3)),
        X<ArgumentOutOfRangeException>("VtdUnit.Read64", "4-aligned but not 8-aligned", c => c.Unit.Read64(0x4)),
        X<ArgumentOutOfRangeException>("VtdUnit.Write32", "offset past the register file", c => { c.Unit.Write32(0x10_0000, 0); return null; }),
        X<ArgumentOutOfRangeException>("VtdUnit.Write64", "unaligned offset", c => { c.Unit.Write64(0x1c, 0); return null; }),
        V("VtdUnit.Translate", "unknown requester faults, no exception", c => c.Unit.Translate(0xffff, null, 0x1000, 8, DmaAccess.Read).IsFault, true),
        V("VtdUnit.Translate", "IOVA 2^64-1 faults", c => c.Unit.Translate(0x0008, null, ulong.MaxValue, 1, DmaAccess.Read).IsFault, true),
        X<ArgumentOutOfRangeException>("VtdUnit.Dma", "PASID that does not fit 20 bits", c => c.Unit.Dma(0x0008, 1u << 20, 0x1000, new byte[8], DmaAccess.Write)),
        V("VtdUnit.Transfer", "empty buffer faults nothing", c => c.Unit.Transfer(0x0008, null, 0x1000, [], DmaAccess.Read).Transferred, 0UL),
        X<ArgumentException>("VtdUnit.Gather", "negative segment length", c => c.Unit.Gather(0x0008, null, new[] { new DmaSegment(0x1000, -1) }, new byte[8])),
        X<ArgumentException>("VtdUnit.Gather", "segments longer than the buffer", c => c.Unit.Gather(0x0008, null, new[] { new DmaSegment(0x1000, 8), new DmaSegment(0x3000, 1) }, new byte[8])),
        X<ArgumentException>("VtdUnit.Gather", "segment wrapping around 2^64", c => c.Unit.Gather(0x0008, null, new[] { new DmaSegment(ulong.MaxValue, 2) }, new byte[8])),
        X<ArgumentOutOfRangeException>("VtdUnit.Gather", "PASID that does not fit 20 bits", c => c.Unit.Gather(0x0008, 1u << 20, new[] { new DmaSegment(0x1000, 8) }, new byte[8])),
        V("VtdUnit.Gather", "no segments moves nothing", c => c.Unit.Gather(0x0008, null, ReadOnlySpan<DmaSegment>.Empty, new byte[8]).Transferred, 0UL),
        X<ArgumentException>("VtdUnit.Scatter", "negative segment length", c => c.Unit.Scatter(0x0008, null, new[] { new DmaSegment(0x1000, -1) }, new byte[8])),
        X<ArgumentException>("VtdUnit.Scatter", "segments longer than the buffer", c => c.Unit.Scatter(0x0008, null, new[] { new DmaSegment(0x1000, 9) }, new byte[8])),
        X<ArgumentException>("VtdUnit.Scatter", "segment wrapping around 2^64", c => c.Unit.Scatter(0x0008, null, new[] { new DmaSegment(ulong.MaxValue - 2, 8) }, new byte[8])),
        V("VtdUnit.Scatter", "zero-length segments move nothing", c => c.Unit.Scatter(0x0008, null, new[] { new DmaSegment(ulong.MaxValue, 0) }, new byte[8]).Transferred, 0UL),
        X<ArgumentNullException>("VtdUnit.DmaRead", "null device", c => c.Unit.DmaRead(null!, null, 0, new byte[8])),
        X<ArgumentNullException>("VtdUnit.DmaWrite", "null device", c => c.Unit.DmaWrite(null!, null, 0, new byte[8])),
        V("VtdUnit.IsQualified", "undefined reason takes the default arm", _ => VtdUnit.IsQualified((VtdFaultReason)0xff), true),
        V("VtdFaultReasonExtensions.Format", "undefined reason prints its code alone", _ => ((VtdFaultReason)0xff).Format(), "0xff"),
        V("VtdFaultReasonExtensions.ToDmaFaultReason", "undefined reason has no name", _ => ((VtdFaultReason)0xee).ToDmaFaultReason().Name, null),
        V("VtdFaultReasonExtensions.ToVtdFaultReason", "no fault is None", _ => DmaFaultReason.None.ToVtdFaultReason(), VtdFaultReason.None),
        X<ArgumentOutOfRangeException>("VtdFaultReasonExtensions.ToVtdFaultReason", "code beyond FRCD.FR's 8 bits", _ => new DmaFaultReason(0x185, null).ToVtdFaultReason()),
        X<ArgumentOutOfRangeException>("VtdFaultReasonExtensions.ToVtdFaultReason", "negative code", _ => new DmaFaultReason(-1, null).ToVtdFaultReason()),

        // VtdConfig / capability decoders
        V("VtdConfig.SupportsAw", "width 0", _ => VtdConfig.ScalableMode48Bit.SupportsAw(0), false),
        V("VtdConfig.SupportsAw", "width 64", _ => VtdConfig.ScalableMode48Bit.SupportsAw(64), false),
        V("VtdConfig.SupportsAw", "width -1", _ => VtdConfig.ScalableMode48Bit.SupportsAw(-1), false),

        // IntelIommu (the driver; normally reached through IommuCore)
        X<ArgumentNullException>("IntelIommu..ctor", "null platform", c => new IntelIommu(null!, c.Unit)),
        X<ArgumentNullException>("IntelIommu..ctor", "null options", c => new IntelIommu(c.Platform, (IntelIommuOptions)null!, c.Unit)),
        X<ArgumentNullException>("IntelIommu..ctor", "null unit array", c => new IntelIommu(c.Platform, (VtdUnit[])null!)),
        X<ArgumentException>("IntelIommu..ctor", "no units", c => new IntelIommu(c.Platform, Array.Empty<VtdUnit>())),
        X<ArgumentNullException>("IntelIommu.AttachDev", "null domain", c => c.Driver.AttachDev(null!, c.Dev)),
        X<ArgumentNullException>("IntelIommu.DetachDev", "null device", c => { c.Driver.DetachDev(c.Domain, null!); return null; }),
        E("IntelIommu.GetDevAttr", "undefined attribute", c => c.Driver.GetDevAttr(c.Dev, (IommuDevAttr)42, out _), Errno.EINVAL),
        E("IntelIommu.SetDevAttr", "AUXD_ENABLE on a device without PASID (enable_pasid fails)", c => c.Driver.SetDevAttr(c.Dev2, IommuDevAttr.AuxdEnable), Errno.ENODEV),
        E("IntelIommu.AuxAttachDev", "AUX not enabled", c => c.Driver.AuxAttachDev(c.Domain, c.Dev), Errno.EPERM),
        X<ArgumentNullException>("IntelIommu.AuxDetachDev", "null device", c => { c.Driver.AuxDetachDev(c.Domain, null!); return null; }),
        E("IntelIommu.AuxGetPasid", "never aux-attached", c => c.Driver.AuxGetPasid(c.Domain, c.Dev), Errno.EINVAL),
        E("IntelIommu.DomainGetAttr", "undefined attribute", c => c.Driver.DomainGetAttr(c.Domain, (DomainAttr)99, out _), Errno.EINVAL),
        V("IntelIommu.Capable", "undefined capability", c => c.Driver.Capable((IommuCap)99), false),
        V("IntelIommu.DomainAlloc", "undefined domain type", c => c.Driver.DomainAlloc((DomainType)99), null),
        X<ArgumentNullException>("IntelIommu.DomainFree", "null", c => { c.Driver.DomainFree(null!); return null; }),
        E("IntelIommu.AddDevice", "device on another bus", c => c.Driver.AddDevice(c.Orphan), Errno.ENODEV),
        X<ArgumentNullException>("IntelIommu.RemoveDevice", "null", c => { c.Driver.RemoveDevice(null!); return null; }),
        X<ArgumentNullException>("IntelIommu.DeviceGroup", "null", c => c.Driver.DeviceGroup(null!, out _)),
        X<ArgumentNullException>("IntelIommu.GetResvRegions", "null list", c => { c.Driver.GetResvRegions(c.Dev, null!); return null; }),
        X<NotSupportedException>("IntelIommu.PageResponse", "page requests are not modelled", c => c.Driver.PageResponse(c.Dev, new Iommu.Faults.IommuFault(), new Iommu.Faults.IommuPageResponse())),
        X<NotSupportedException>("IntelIommu.Map", "5.15 has map_pages only", c => c.Driver.Map(c.Domain, 0x800, 0x1_0000_0000, 4096, IommuProt.Read)),
        E("IntelIommu.MapPages", "unaligned IOVA", c => c.Driver.MapPages(c.Domain, 0x800, 0x1_0000_0000, 4096, 1, IommuProt.Read, out _), Errno.EINVAL),
        E("IntelIommu.MapPages", "IOVA beyond the domain width", c => c.Driver.MapPages(c.Domain, 1UL << 57, 0x1_0000_0000, 4096, 1, IommuProt.Read, out _), Errno.EFAULT),
        E("IntelIommu.MapPages", "zero pages maps nothing", c => c.Driver.MapPages(c.Domain, 0x1000, 0x1_0000_0000, 4096, 0, IommuProt.Read, out _), Errno.None),
        X<NotSupportedException>("IntelIommu.Unmap", "5.15 has unmap_pages only", c => { var g = new IommuIotlbGather(); return c.Driver.Unmap(c.Domain, 0x1000, 4096, ref g); }),
        V("IntelIommu.UnmapPages", "nothing mapped", c => { var g = new IommuIotlbGather(); return c.Driver.UnmapPages(c.Domain, 0x1000, 4096, 1, ref g); }, 0UL),
        V("IntelIommu.IovaToPhys", "IOVA 2^64-1", c => c.Driver.IovaToPhys(c.Domain, ulong.MaxValue), 0UL),
        X<ArgumentNullException>("IntelIommu.IotlbSync", "null domain", c => { var g = new IommuIotlbGather(); c.Driver.IotlbSync(null!, ref g); return null; }),
        Ok("IntelIommu.IotlbSyncMap", "nothing to flush for a null domain", c => c.Driver.IotlbSyncMap(null!, 0, 4096)),
        X<ArgumentNullException>("IntelIommu.FlushIotlbAll", "null domain", c => { c.Driver.FlushIotlbAll(null!); return null; }),

        // Diagnostics
        X<ArgumentNullException>("VtdImageExporter.ExportImage", "null unit", _ => ((VtdUnit)null!).ExportImage()),
        X<ArgumentOutOfRangeException>("VtdImageExporter.ExportImage", "unit index 5", c => c.Driver.ExportImage(5)),
        X<ArgumentOutOfRangeException>("VtdImageExporter.ExportImage", "unit index -1", c => c.Driver.ExportImage(-1)),
        X<ArgumentNullException>("VtdImageExporter.Export", "null memory", _ => VtdImageExporter.Export(null!, 0, 46, true)),
        X<ArgumentOutOfRangeException>("VtdImageExporter.Export", "host address width 0", c => VtdImageExporter.Export(c.Memory, 0x1000, 0, true)),
        X<ArgumentOutOfRangeException>("VtdImageExporter.Export", "host address width 65", c => VtdImageExporter.Export(c.Memory, 0x1000, 65, true)),
        V("VtdImageExporter.Export", "root table beyond memory exports nothing", c => VtdImageExporter.Export(c.Memory, 0xffff_ffff_f000, 52, true).Chunks.Count, 0),
        X<ArgumentNullException>("VtdImageJson.FromJson", "null", _ => VtdImageJson.FromJson(null!)),
        X<FormatException>("VtdImageJson.FromJson", "not JSON", _ => VtdImageJson.FromJson("{nope")),
        X<ArgumentNullException>("VtdImageJson.ToJson", "null image", _ => ((VtdImage)null!).ToJson()),
        X<ArgumentOutOfRangeException>("VtdImage.ReadUInt64", "address in no chunk", c => c.Unit.ExportImage().ReadUInt64(0x8)),
        X<ArgumentOutOfRangeException>("VtdImage.WithUInt64", "address in no chunk", c => c.Unit.ExportImage().WithUInt64(0x8, 1)),
        X<ArgumentException>("VtdImage.Relocate", "unaligned window", c => c.Unit.ExportImage().Relocate(0x800, 1 << 20)),
        X<ArgumentNullException>("VtdImage.LoadInto", "null memory", c => { c.Unit.ExportImage().LoadInto(null!); return null; }),
        X<ArgumentNullException>("VtdImage.Probe", "null config", c => c.Unit.ExportImage().Probe(null!, [])),
        X<ArgumentNullException>("VtdImage..ctor", "null chunks", _ => new VtdImage(0, 46, false, null!)),
        V("VtdImage.ContextEntryAddress", "requester with no root entry", c => c.Unit.ExportImage().ContextEntryAddress(0xff00), null),
        V("VtdImage.Path", "requester with no context: the walk stops at the root entry", c => c.Unit.ExportImage().Path(0xff00, null, ulong.MaxValue).Count <= 1, true),
        X<ArgumentOutOfRangeException>("VtdImageChunk.Word", "offset past the chunk", _ => new VtdImageChunk(0, VtdImageChunkKind.RootTable, 0, new byte[16]).Word(16)),
        X<ArgumentOutOfRangeException>("VtdImageChunk.Word", "negative offset", _ => new VtdImageChunk(0, VtdImageChunkKind.RootTable, 0, new byte[16]).Word(-8)),
        X<ArgumentOutOfRangeException>("VtdImageJson.KindName", "undefined kind", _ => VtdImageJson.KindName((VtdImageChunkKind)99)),
    ];
}
