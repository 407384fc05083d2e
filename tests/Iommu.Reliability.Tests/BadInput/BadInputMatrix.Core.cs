using System.Globalization;
using Iommu.Devices;
using Iommu.Memory;
using Iommu.Domains;
using Iommu.Faults;
using Iommu.Groups;
using Iommu.Reliability.Tests.Infrastructure;
using static Iommu.Reliability.Tests.BadInput.Rows;

namespace Iommu.Reliability.Tests.BadInput;

internal static partial class BadInputMatrix
{
    private const ulong G = Sizes.GiB;

    /// <summary>Iommu.Core: platform, memory, frames, PCI, groups, the IOMMU core API.</summary>
    private static IEnumerable<BadInputRow> Core() =>
    [
        // Platform
        V("Platform..ctor", "null options means the defaults", _ => { using var p = new Platform(null); return p.Options.MemorySize; }, 64 * G),
        X<ArgumentOutOfRangeException>("Platform..ctor", "memory size 0", _ => new Platform(new PlatformOptions { MemorySize = 0 })),
        X<ArgumentOutOfRangeException>("Platform..ctor", "memory size not 4K-aligned", _ => new Platform(new PlatformOptions { MemorySize = G + 1 })),
        X<ArgumentOutOfRangeException>("Platform..ctor", "table region larger than memory", _ => new Platform(new PlatformOptions { MemorySize = G, TableMemorySize = 2 * G })),
        X<ArgumentOutOfRangeException>("Platform..ctor", "table region 0", _ => new Platform(new PlatformOptions { TableMemorySize = 0 })),
        X<ArgumentOutOfRangeException>("Platform.AddPciBus", "segment -1", c => c.Platform.AddPciBus(-1)),
        X<ArgumentOutOfRangeException>("Platform.AddPciBus", "segment 0x10000", c => c.Platform.AddPciBus(0x10000)),
        X<ArgumentException>("Platform.AddPciBus", "segment already has a bus", c => c.Platform.AddPciBus(0)),
        X<ArgumentNullException>("Platform.AddBus", "null name", c => c.Platform.AddBus(null!)),
        X<ArgumentException>("Platform.AddBus", "duplicate name", c => c.Platform.AddBus("plain")),
        V("Platform.GetPciBus", "segment -1", c => c.Platform.GetPciBus(-1), null),
        X<ArgumentNullException>("Platform.GetMeter", "null name", c => c.Platform.GetMeter(null!)),
        X<ArgumentException>("Platform.GetMeter", "empty name", c => c.Platform.GetMeter(string.Empty)),
        X<ObjectDisposedException>("Platform.GetMeter", "after Platform.Dispose", c => { c.Platform.Dispose(); return c.Platform.GetMeter("Iommu.Core"); }),
        X<ArgumentOutOfRangeException>("PlatformClock.Advance", "negative time", c => { c.Platform.Clock.Advance(TimeSpan.FromTicks(-1)); return null; }),
        X<ArgumentOutOfRangeException>("PlatformClock.Advance", "past TimeSpan.MaxValue", c => { c.Platform.Clock.Advance(TimeSpan.FromTicks(1)); c.Platform.Clock.Advance(TimeSpan.MaxValue); return null; }),
        X<ObjectDisposedException>("PhysicalMemory.ReadUInt64", "after Platform.Dispose (native memory freed)", c => { c.Platform.Dispose(); return c.Memory.ReadUInt64(0x1000); }),

        // PhysicalMemory
        X<ArgumentOutOfRangeException>("PhysicalMemory..ctor", "size 0", _ => new PhysicalMemory(0)),
        X<ArgumentOutOfRangeException>("PhysicalMemory..ctor", "size not 4K-aligned", _ => new PhysicalMemory(4097)),
        X<ArgumentNullException>("PhysicalMemory..ctor", "null RAM ranges", _ => new PhysicalMemory(0x20_0000, null!)),
        X<ArgumentOutOfRangeException>("PhysicalMemory..ctor", "RAM range past the end", _ => new PhysicalMemory(0x20_0000, [new HostMemoryRange(0x1F_F000, 0x2000, 0x1000)])),
        X<ArgumentOutOfRangeException>("PhysicalMemory..ctor", "RAM range wrapping 2^64", _ => new PhysicalMemory(0x20_0000, [new HostMemoryRange(ulong.MaxValue - 0xFFF, 0x2000, 0x1000)])),
        X<ArgumentOutOfRangeException>("PhysicalMemory..ctor", "host address not 4K-aligned", _ => new PhysicalMemory(0x20_0000, [new HostMemoryRange(0, 0x1000, 0x1008)])),
        X<ArgumentException>("PhysicalMemory..ctor", "overlapping RAM ranges", _ => new PhysicalMemory(0x20_0000, [new HostMemoryRange(0, 0x2000, 0x1000), new HostMemoryRange(0x1000, 0x1000, 0x8000)])),
        V("PhysicalMemory.Contains", "range wrapping 2^64", c => c.Memory.Contains(ulong.MaxValue - 7, 16), false),
        V("PhysicalMemory.Contains", "range past the end", c => c.Memory.Contains((16 * G) - 8, 16), false),
        X<ArgumentOutOfRangeException>("PhysicalMemory.ReadUInt64", "address past the end", c => c.Memory.ReadUInt64(16 * G)),
        X<ArgumentException>("PhysicalMemory.ReadUInt64", "unaligned address", c => c.Memory.ReadUInt64(0x1004)),
        X<ArgumentOutOfRangeException>("PhysicalMemory.WriteUInt64", "address 2^64-8", c => { c.Memory.WriteUInt64(ulong.MaxValue - 7, 1); return null; }),
        X<ArgumentException>("PhysicalMemory.WriteUInt64", "unaligned address", c => { c.Memory.WriteUInt64(0x1001, 1); return null; }),
        X<ArgumentOutOfRangeException>("PhysicalMemory.ReadUInt32", "address past the end", c => c.Memory.ReadUInt32(16 * G)),
        X<ArgumentOutOfRangeException>("PhysicalMemory.WriteUInt32", "address past the end", c => { c.Memory.WriteUInt32(16 * G, 1); return null; }),
        X<ArgumentOutOfRangeException>("PhysicalMemory.Read", "range wraps", c => { c.Memory.Read(ulong.MaxValue - 3, new byte[16]); return null; }),
        X<ArgumentOutOfRangeException>("PhysicalMemory.Write", "range past the end", c => { c.Memory.Write((16 * G) - 2, new byte[4]); return null; }),
        V("PhysicalMemory.TryRead", "range wraps: nothing moves", c => c.Memory.TryRead(ulong.MaxValue - 3, new byte[16]), false),
        V("PhysicalMemory.TryRead", "range past the end: nothing moves", c => c.Memory.TryRead((16 * G) - 2, new byte[4]), false),
        V("PhysicalMemory.TryReadUInt64", "range wraps: nothing moves", c => c.Memory.TryReadUInt64(ulong.MaxValue - 7, new ulong[2]), false),
        V("PhysicalMemory.TryReadUInt64", "range past the end: nothing moves", c => c.Memory.TryReadUInt64((16 * G) - 8, new ulong[2]), false),
        X<ArgumentException>("PhysicalMemory.TryReadUInt64", "unaligned address", c => c.Memory.TryReadUInt64(0x1004, new ulong[2])),
        V("PhysicalMemory.TryWrite", "range past the end: nothing moves", c => c.Memory.TryWrite((16 * G) - 2, new byte[4]), false),
        V("PhysicalMemory.TryWrite", "range wraps: nothing moves", c => c.Memory.TryWrite(ulong.MaxValue - 3, new byte[16]), false),
        X<ArgumentOutOfRangeException>("PhysicalMemory.Fill", "length past the end", c => { c.Memory.Fill(0, (16 * G) + 1, 0); return null; }),
        X<ArgumentOutOfRangeException>("PhysicalMemory.GetSpan", "negative length", c => { c.Memory.GetSpan(0, -1); return null; }),
        X<ArgumentOutOfRangeException>("PhysicalMemory.GetSpan", "past the end", c => { c.Memory.GetSpan(16 * G, 16); return null; }),
        X<ArgumentException>("PhysicalMemory.GetSpan", "crossing a 2 MiB chunk", c => { c.Memory.GetSpan((2 * Sizes.MiB) - 8, 16); return null; }),
        X<ArgumentException>("PhysicalMemory.Frame", "unaligned frame address", c => { c.Memory.Frame(0x1001); return null; }),
        X<ArgumentException>("PhysicalMemory.Table", "unaligned table address", c => { c.Memory.Table(0x1008); return null; }),
        X<ArgumentOutOfRangeException>("PhysicalMemory.IsBacked", "address past the end", c => c.Memory.IsBacked(ulong.MaxValue)),
        X<ArgumentOutOfRangeException>("PhysicalMemory.PinContiguous", "size 0", c => c.Memory.PinContiguous(0, 0)),
        X<ArgumentOutOfRangeException>("PhysicalMemory.PinContiguous", "range past the end", c => c.Memory.PinContiguous(16 * G, 4096)),
        X<ArgumentNullException>("PhysicalMemory.Claim", "null owner", c => { c.Memory.Claim(0x20_0000, 0x1000, null!, "pool"); return null; }),
        X<ArgumentNullException>("PhysicalMemory.Claim", "null description", c => { c.Memory.Claim(0x20_0000, 0x1000, new object(), null!); return null; }),
        X<ArgumentOutOfRangeException>("PhysicalMemory.Claim", "size 0", c => { c.Memory.Claim(0x20_0000, 0, new object(), "pool"); return null; }),
        X<ArgumentOutOfRangeException>("PhysicalMemory.Claim", "range wrapping 2^64", c => { c.Memory.Claim(ulong.MaxValue - 0xfff, 0x2000, new object(), "pool"); return null; }),
        X<ArgumentException>("PhysicalMemory.Claim", "overlaps the page-table frame region", c => { c.Memory.Claim(c.Platform.Frames.RegionBase, 0x1000, new object(), "pool"); return null; }),
        X<ArgumentNullException>("PhysicalMemory.FindOrClaim", "null find", c => c.Memory.FindOrClaim<object>(null!, () => new object())),
        X<ArgumentNullException>("PhysicalMemory.FindOrClaim", "null create", c => c.Memory.FindOrClaim<object>(_ => null, null!)),
        V("ContiguousRegion.ContainsFrame", "address below the region (unsigned wrap)", c => c.Memory.PinContiguous(0x20_0000, 0x1_0000).ContainsFrame(0x1000), false),
        X<ArgumentOutOfRangeException>("ContiguousRegion.Entry", "address past the region", c => c.Memory.PinContiguous(0x20_0000, 0x1_0000).Entry(0x21_0000)),
        X<ArgumentOutOfRangeException>("ContiguousRegion.Entry", "unaligned address", c => c.Memory.PinContiguous(0x20_0000, 0x1_0000).Entry(0x20_0004)),
        X<ArgumentException>("ContiguousRegion.Table", "unaligned address falls back to PhysicalMemory.Table", c => { c.Memory.PinContiguous(0x20_0000, 0x1_0000).Table(0x20_0008); return null; }),

        // FrameAllocator
        X<ArgumentNullException>("FrameAllocator..ctor", "null memory", _ => new FrameAllocator(null!, 0, 4096)),
        X<ArgumentOutOfRangeException>("FrameAllocator..ctor", "unaligned base", c => new FrameAllocator(c.Memory, 0x800, 0x10000)),
        X<ArgumentOutOfRangeException>("FrameAllocator..ctor", "region past the end of memory", c => new FrameAllocator(c.Memory, 16 * G, 0x10000)),
        X<ArgumentException>("FrameAllocator.Free", "address outside the region", c => { c.Platform.Frames.Free(0x1000); return null; }),
        X<InvalidOperationException>("FrameAllocator.Free", "double free", c =>
        {
            Assert.True(c.Platform.Frames.TryAllocate(out ulong pa));
            c.Platform.Frames.Free(pa);
            c.Platform.Frames.Free(pa);
            return null;
        }),
        X<ArgumentException>("FrameAllocator.FreeList", "head outside the region", c => c.Platform.Frames.FreeList(0x1000)),
        X<InvalidOperationException>("FrameAllocator.FreeList", "chain through a free frame (double free)", c =>
        {
            Assert.True(c.Platform.Frames.TryAllocate(out ulong pa));
            c.Platform.Frames.Free(pa);
            return c.Platform.Frames.FreeList(pa);
        }),
        V("FrameAllocator.FreeList", "empty chain (0)", c => c.Platform.Frames.FreeList(0), 0),
        X<ArgumentOutOfRangeException>("FrameAllocator.FreeContiguous", "count 0", c => { c.Platform.Frames.FreeContiguous(c.Platform.Frames.RegionBase, 0); return null; }),
        X<ArgumentException>("FrameAllocator.FreeContiguous", "run outside the region", c => { c.Platform.Frames.FreeContiguous(0x1000, 2); return null; }),
        X<ArgumentException>("FrameAllocator.FreeContiguous", "run past the region's end", c => { c.Platform.Frames.FreeContiguous(c.Platform.Frames.RegionBase + c.Platform.Frames.RegionSize - 4096, 2); return null; }),
        X<InvalidOperationException>("FrameAllocator.FreeContiguous", "run with a free frame (double free)", c =>
        {
            Assert.True(c.Platform.Frames.TryAllocateContiguous(4, out ulong pa));
            c.Platform.Frames.FreeContiguous(pa, 4);
            c.Platform.Frames.FreeContiguous(pa, 4);
            return null;
        }),
        X<ArgumentOutOfRangeException>("FrameAllocator.TryAllocateContiguous", "count 0", c => c.Platform.Frames.TryAllocateContiguous(0, out _)),
        X<ArgumentOutOfRangeException>("FrameAllocator.TryAllocateContiguous", "negative count", c => c.Platform.Frames.TryAllocateContiguous(-1, out _)),
        V("FrameAllocator.TryAllocateContiguous", "more frames than the region", c => c.Platform.Frames.TryAllocateContiguous(int.MaxValue, out _), false),
        V("FrameAllocator.IsAllocated", "address outside the region", c => c.Platform.Frames.IsAllocated(0), false),
        X<ArgumentOutOfRangeException>("FrameAllocator.FailNth", "negative n", c => { c.Platform.Frames.FailNth(-1); return null; }),

        // PciAddress / PciDeviceSpec
        X<ArgumentOutOfRangeException>("PciAddress..ctor", "segment -1", _ => new PciAddress(-1, 0, 0, 0)),
        X<ArgumentOutOfRangeException>("PciAddress..ctor", "bus 256", _ => new PciAddress(0, 256, 0, 0)),
        X<ArgumentOutOfRangeException>("PciAddress..ctor", "device 32", _ => new PciAddress(0, 0, 32, 0)),
        X<ArgumentOutOfRangeException>("PciAddress..ctor", "function 8", _ => new PciAddress(0, 0, 0, 8)),
        X<ArgumentNullException>("PciAddress.Parse", "null", _ => PciAddress.Parse(null!, CultureInfo.InvariantCulture)),
        X<FormatException>("PciAddress.Parse", "function 8", _ => PciAddress.Parse("0000:00:1f.8", CultureInfo.InvariantCulture)),
        X<FormatException>("PciAddress.Parse", "garbage", _ => PciAddress.Parse("zz:zz", CultureInfo.InvariantCulture)),
        V("PciAddress.TryParse", "device 0x20", c => PciAddress.TryParse("0000:00:20.0", CultureInfo.InvariantCulture, out _), false),
        V("PciAddress.TryParse", "null", c => PciAddress.TryParse(null, CultureInfo.InvariantCulture, out _), false),
        X<ArgumentOutOfRangeException>("PciAddress.FromRequesterId", "segment -1", _ => PciAddress.FromRequesterId(-1, 0)),
        V("PciAddress.TryFormat", "destination too small", c => new PciAddress(0, 1, 2, 3).TryFormat(new char[4], out _, default, CultureInfo.InvariantCulture), false),
        V("PciAddress.ToString", "unknown format string is ignored", _ => new PciAddress(0, 1, 2, 3).ToString("Q", CultureInfo.InvariantCulture), "0000:01:02.3"),
        X<ArgumentNullException>("PciDeviceSpec..ctor", "null address text", _ => new PciDeviceSpec((string)null!)),
        X<FormatException>("PciDeviceSpec..ctor", "not a BDF", _ => new PciDeviceSpec("00:1")),

        // Bus / PciBus / PciDevice
        E("Bus.SetIommuOps", "null ops clears them (bus_set_iommu)", c => c.PlainBus.SetIommuOps(null!), Errno.None),
        E("Bus.SetIommuOps", "ops already set", c => c.Pci.SetIommuOps(c.Driver), Errno.EBUSY),
        X<ArgumentNullException>("Bus.AddDevice", "null device", c => c.PlainBus.AddDevice(null!)),
        X<ArgumentException>("Bus.AddDevice", "non-PCI device on a PCI bus", c => ((Bus)c.Pci).AddDevice(new Device("x"))),
        X<ArgumentNullException>("Bus.RemoveDevice", "null device", c => { c.PlainBus.RemoveDevice(null!); return null; }),
        X<ArgumentNullException>("PciBus.AddDevice", "null spec", c => c.Pci.AddDevice(null!)),
        X<ArgumentException>("PciBus.AddDevice", "address taken", c => c.Pci.AddDevice(new PciDeviceSpec("0000:00:01.0"))),
        X<ArgumentException>("PciBus.AddDevice", "upstream bridge missing", c => c.Pci.AddDevice(new PciDeviceSpec("0000:05:00.0") { Upstream = new PciAddress(0, 0, 0x1c, 0) })),
        X<ArgumentOutOfRangeException>("PciBus.AddDevice", "class code wider than 24 bits", c => c.Pci.AddDevice(new PciDeviceSpec("0000:05:00.0") { ClassCode = 0x100_0000 })),
        X<ArgumentOutOfRangeException>("PciBus.AddDevice", "PASID width above 20", c => c.Pci.AddDevice(new PciDeviceSpec("0000:05:00.0") { PasidWidth = 21 })),
        X<ArgumentNullException>("PciBus.AddDmaRemapper", "null unit", c => { c.Pci.AddDmaRemapper(null!, includeAll: false); return null; }),
        X<InvalidOperationException>("PciBus.AddDmaRemapper", "second INCLUDE_ALL unit", c => { c.Pci.AddDmaRemapper(c.Unit, includeAll: true); return null; }),
        X<ArgumentNullException>("PciBus.AddRmrr", "null scope", c => { c.Pci.AddRmrr(0x1000, 0x1FFF, null!); return null; }),
        X<ArgumentOutOfRangeException>("PciBus.AddRmrr", "end before base", c => { c.Pci.AddRmrr(0x2000, 0x1FFF); return null; }),
        X<ArgumentOutOfRangeException>("PciBus.AddRmrr", "partial page", c => { c.Pci.AddRmrr(0x2000, 0x27FF); return null; }),
        X<ArgumentNullException>("PciBus.FindDmaRemapper", "null device", c => c.Pci.FindDmaRemapper(null!)),
        X<ArgumentNullException>("PciBus.Find", "null name", c => c.Pci.Find((string)null!)),
        X<FormatException>("PciBus.Find", "not a BDF", c => c.Pci.Find("nonsense")),
        X<ArgumentNullException>("PciDevice.IsDmaAliasOf", "null", c => c.Dev.IsDmaAliasOf(null!)),
        V("DmaFaultReason..ctor", "negative code and no name", _ => new DmaFaultReason(-1, null).Code, -1),
        V("DmaFaultReason.ToString", "negative code prints its bits in hex", _ => new DmaFaultReason(-1, null).ToString(), "0xffffffff"),
        V("DmaFaultReason.ToString", "empty name is still printed as given", _ => new DmaFaultReason(5, "").ToString(), "0x05 ()"),
        V("DmaFaultReason.ToString", "numeric format of the code", _ => new DmaFaultReason(0x85, "ScalableWrite").ToString("x4", null), "0085"),
        X<FormatException>("DmaFaultReason.ToString", "format that is not numeric", _ => new DmaFaultReason(0x85, "ScalableWrite").ToString("q", null)),
        V("DmaFaultReason.TryFormat", "empty destination", _ => new DmaFaultReason(0x42, "SomeReason").TryFormat(Span<char>.Empty, out int _, default, null), false),
        V("PciDevice.DmaRead", "unmapped IOVA faults, no exception", c => c.Dev.DmaRead(null, 0xdead_0000, new byte[8]).IsOk, false),
        X<ArgumentOutOfRangeException>("PciDevice.DmaWrite", "PASID that does not fit 20 bits", c => c.Dev.DmaWrite(1u << 20, 0x1000, new byte[8])),

        // IommuGroup
        X<ArgumentNullException>("IommuGroup.ForEachDevice", "null callback", c => c.Dev.IommuGroup!.ForEachDevice(null!)),
        X<ArgumentNullException>("IommuGroup.RegisterNotifier", "null notifier", c => c.Dev.IommuGroup!.RegisterNotifier(null!)),
        E("IommuGroup.UnregisterNotifier", "never registered", c => c.Dev.IommuGroup!.UnregisterNotifier((_, _) => { }), Errno.ENOENT),
        Ok("IommuGroup.Notify", "no notifier registered: nothing to call", c => c.Dev.IommuGroup!.Notify(IommuGroupNotification.AddDevice, c.Dev)),
        Ok("IommuGroup.SetIommuData", "null data and release", c => c.Dev.IommuGroup!.SetIommuData(null, null)),

        // IommuCore: domains and attach
        X<ArgumentNullException>("IommuCore.DomainAlloc", "null bus", c => c.Iommu.DomainAlloc(null!)),
        V("IommuCore.DomainAlloc", "bus without IOMMU ops", c => c.Iommu.DomainAlloc(c.PlainBus), null),
        V("IommuCore.DomainAllocType", "identity type on a bus without ops", c => c.Iommu.DomainAllocType(c.PlainBus, DomainType.Identity), null),
        X<ArgumentNullException>("IommuCore.DomainFree", "null", c => { c.Iommu.DomainFree(null!); return null; }),
        X<InvalidOperationException>("IommuCore.DomainFree", "domain still attached", c =>
        {
            IDomain d = c.Domain;
            c.Iommu.AttachDevice(d, c.Dev2).ThrowIfError();
            c.Iommu.DomainFree(d);
            return null;
        }),
        X<ArgumentNullException>("IommuCore.AttachDevice", "null domain", c => c.Iommu.AttachDevice(null!, c.Dev)),
        X<ArgumentNullException>("IommuCore.AttachDevice", "null device", c => c.Iommu.AttachDevice(c.Domain, null!)),
        E("IommuCore.AttachDevice", "device without a group", c => c.Iommu.AttachDevice(c.Domain, c.Orphan), Errno.ENODEV),
        X<ArgumentNullException>("IommuCore.DetachDevice", "null device", c => { c.Iommu.DetachDevice(c.Domain, null!); return null; }),
        X<ArgumentNullException>("IommuCore.AttachGroup", "null group", c => c.Iommu.AttachGroup(c.Domain, null!)),
        X<ArgumentNullException>("IommuCore.DetachGroup", "null group", c => { c.Iommu.DetachGroup(c.Domain, null!); return null; }),
        X<ArgumentNullException>("IommuCore.GetDomainForDev", "null", c => c.Iommu.GetDomainForDev(null!)),
        V("IommuCore.GetDomainForDev", "device without a group", c => c.Iommu.GetDomainForDev(c.Orphan), null),
        V("IommuCore.GetDmaDomain", "device without a group", c => c.Iommu.GetDmaDomain(c.Orphan), null),
        X<ArgumentNullException>("IommuCore.Capable", "null bus", c => c.Iommu.Capable(null!, IommuCap.CacheCoherency)),

        // IommuCore: the DMA API (dma-iommu)
        X<ArgumentNullException>("IommuCore.DmaMapPage", "null device", c => c.Iommu.DmaMapPage(null!, 0x1000, 4096, DmaDataDirection.ToDevice)),
        X<ArgumentOutOfRangeException>("IommuCore.DmaMapPage", "DMA_NONE (BUG_ON(!valid_dma_direction))", c => c.Iommu.DmaMapPage(c.Dev, 0x1000, 4096, DmaDataDirection.None)),
        X<ArgumentOutOfRangeException>("IommuCore.DmaMapPage", "undefined direction", c => c.Iommu.DmaMapPage(c.Dev, 0x1000, 4096, (DmaDataDirection)7)),
        V("IommuCore.DmaMapPage", "size 0 is DMA_MAPPING_ERROR", c => c.Iommu.DmaMapPage(c.Dev, 0x1000, 0, DmaDataDirection.ToDevice), IommuCore.DmaMappingError),
        V("IommuCore.DmaMapPage", "size wrapping 2^64 is DMA_MAPPING_ERROR", c => c.Iommu.DmaMapPage(c.Dev, 0x1800, ulong.MaxValue - 0x100, DmaDataDirection.ToDevice), IommuCore.DmaMappingError),
        V("IommuCore.DmaMapPage", "dma-direct range wrapping 2^64 is DMA_MAPPING_ERROR", c => c.Iommu.DmaMapPage(c.Orphan, ulong.MaxValue - 7, 16, DmaDataDirection.ToDevice), IommuCore.DmaMappingError),
        V("IommuCore.DmaMapPage", "IOVA space exhausted is DMA_MAPPING_ERROR", c => c.Iommu.DmaMapPage(c.Dev, 0, 1UL << 62, DmaDataDirection.ToDevice), IommuCore.DmaMappingError),
        X<ArgumentNullException>("IommuCore.DmaMapSg", "null device", c => c.Iommu.DmaMapSg(null!, new Scatterlist[] { new(0x1000, 16) }, DmaDataDirection.ToDevice)),
        X<ArgumentOutOfRangeException>("IommuCore.DmaMapSg", "DMA_NONE", c => c.Iommu.DmaMapSg(c.Dev, new Scatterlist[] { new(0x1000, 16) }, DmaDataDirection.None)),
        V("IommuCore.DmaMapSg", "empty list is 0 segments", c => c.Iommu.DmaMapSg(c.Dev, Span<Scatterlist>.Empty, DmaDataDirection.ToDevice), 0),
        V("IommuCore.DmaMapSg", "entry of 0 bytes is 0 segments", c => c.Iommu.DmaMapSg(c.Dev, new Scatterlist[] { new(0x1000, 16), new(0x3000, 0) }, DmaDataDirection.ToDevice), 0),
        V("IommuCore.DmaMapSg", "entry wrapping 2^64 is 0 segments", c => c.Iommu.DmaMapSg(c.Dev, new Scatterlist[] { new(ulong.MaxValue - 7, 16) }, DmaDataDirection.ToDevice), 0),
        V("IommuCore.DmaMapSg", "dma-direct entry wrapping 2^64 is 0 segments", c => c.Iommu.DmaMapSg(c.Orphan, new Scatterlist[] { new(ulong.MaxValue - 7, 16) }, DmaDataDirection.ToDevice), 0),
        X<ArgumentNullException>("IommuCore.DmaUnmapSg", "null device", c => { c.Iommu.DmaUnmapSg(null!, new Scatterlist[] { new(0x1000, 16) }, DmaDataDirection.ToDevice); return null; }),
        X<ArgumentOutOfRangeException>("IommuCore.DmaUnmapSg", "DMA_NONE", c => { c.Iommu.DmaUnmapSg(c.Dev, new Scatterlist[] { new(0x1000, 16) }, DmaDataDirection.None); return null; }),
        X<ArgumentException>("IommuCore.DmaUnmapSg", "empty list", c => { c.Iommu.DmaUnmapSg(c.Dev, ReadOnlySpan<Scatterlist>.Empty, DmaDataDirection.ToDevice); return null; }),
        X<ArgumentException>("IommuCore.DmaUnmapSg", "a list never mapped", c => { c.Iommu.DmaUnmapSg(c.Dev, new Scatterlist[] { new(0x1000, 16) }, DmaDataDirection.ToDevice); return null; }),
        X<ArgumentException>("IommuCore.DmaUnmapSg", "twice", c =>
        {
            Scatterlist[] sg = [new(0x1000, 16)];
            c.Iommu.DmaMapSg(c.Dev, sg, DmaDataDirection.ToDevice);
            c.Iommu.DmaUnmapSg(c.Dev, sg, DmaDataDirection.ToDevice);
            c.Iommu.DmaUnmapSg(c.Dev, sg, DmaDataDirection.ToDevice);
            return null;
        }),
        X<ArgumentNullException>("IommuCore.DmaAllocCoherent", "null device", c => c.Iommu.DmaAllocCoherent(null!, 4096, out _)),
        V("IommuCore.DmaAllocCoherent", "size 0 is NULL", c => c.Iommu.DmaAllocCoherent(c.Dev, 0, out _), 0UL),
        V("IommuCore.DmaAllocCoherent", "size wrapping 2^64 is NULL", c => c.Iommu.DmaAllocCoherent(c.Dev, ulong.MaxValue - 10, out _), 0UL),
        V("IommuCore.DmaAllocCoherent", "more pages than the frames hold is NULL", c => c.Iommu.DmaAllocCoherent(c.Dev, 1UL << 40, out _), 0UL),
        X<ArgumentNullException>("IommuCore.DmaFreeCoherent", "null device", c => { c.Iommu.DmaFreeCoherent(null!, 4096, 0x1000, 0x1000); return null; }),
        X<ArgumentException>("IommuCore.DmaFreeCoherent", "a buffer never allocated", c => { c.Iommu.DmaFreeCoherent(c.Dev, 4096, c.Platform.Frames.RegionBase, 0x1000); return null; }),
        X<ArgumentException>("IommuCore.DmaFreeCoherent", "another device's buffer", c =>
        {
            ulong cpu = c.Iommu.DmaAllocCoherent(c.Dev, 4096, out ulong h);
            c.Iommu.DmaFreeCoherent(c.Orphan, 4096, cpu, h);
            return null;
        }),
        X<ArgumentException>("IommuCore.DmaFreeCoherent", "another size", c =>
        {
            ulong cpu = c.Iommu.DmaAllocCoherent(c.Dev, 8192, out ulong h);
            c.Iommu.DmaFreeCoherent(c.Dev, 4096, cpu, h);
            return null;
        }),
        X<ArgumentNullException>("IommuCore.DmaSetMask", "null device", c => c.Iommu.DmaSetMask(null!, ulong.MaxValue)),
        E("IommuCore.DmaSetMask", "dma-direct mask below 24 bits", c => c.Iommu.DmaSetMask(c.Orphan, 0xFFFF), Errno.EIO),
        X<ArgumentNullException>("IommuCore.DmaSetCoherentMask", "null device", c => c.Iommu.DmaSetCoherentMask(null!, ulong.MaxValue)),
        E("IommuCore.DmaSetCoherentMask", "dma-direct mask below 24 bits", c => c.Iommu.DmaSetCoherentMask(c.Orphan, 0xFFFF), Errno.EIO),
        X<ArgumentNullException>("IommuCore.DmaSetMaskAndCoherent", "null device", c => c.Iommu.DmaSetMaskAndCoherent(null!, ulong.MaxValue)),
        E("IommuCore.DmaSetMaskAndCoherent", "dma-direct mask below 24 bits", c => c.Iommu.DmaSetMaskAndCoherent(c.Orphan, 0), Errno.EIO),
        X<ArgumentNullException>("IommuCore.DmaGetMask", "null device", _ => IommuCore.DmaGetMask(null!)),
        X<ArgumentNullException>("IommuCore.DmaSetMaxSegSize", "null device", c => c.Iommu.DmaSetMaxSegSize(null!, 4096)),
        E("IommuCore.DmaSetMaxSegSize", "device without dma_parms", c => c.Iommu.DmaSetMaxSegSize(c.Orphan, 4096), Errno.EIO),
        X<ArgumentNullException>("IommuCore.DmaGetMaxSegSize", "null device", _ => IommuCore.DmaGetMaxSegSize(null!)),
        X<ArgumentNullException>("IommuCore.DmaSetSegBoundary", "null device", c => c.Iommu.DmaSetSegBoundary(null!, 0xFFFF)),
        X<ArgumentOutOfRangeException>("IommuCore.DmaSetSegBoundary", "mask + 1 not a power of two", c => c.Iommu.DmaSetSegBoundary(c.Dev, 0x3000)),
        X<ArgumentOutOfRangeException>("IommuCore.DmaSetSegBoundary", "mask below a page", c => c.Iommu.DmaSetSegBoundary(c.Dev, 0x7FF)),
        E("IommuCore.DmaSetSegBoundary", "device without dma_parms", c => c.Iommu.DmaSetSegBoundary(c.Orphan, 0xFFFF), Errno.EIO),
        X<ArgumentNullException>("IommuCore.DmaGetSegBoundary", "null device", _ => IommuCore.DmaGetSegBoundary(null!)),
        X<ArgumentNullException>("IommuCore.DmaUnmapPage", "null device", c => { c.Iommu.DmaUnmapPage(null!, 0x1000, 4096, DmaDataDirection.ToDevice); return null; }),
        X<ArgumentOutOfRangeException>("IommuCore.DmaUnmapPage", "DMA_NONE", c => { c.Iommu.DmaUnmapPage(c.Dev, 0x1000, 4096, DmaDataDirection.None); return null; }),
        X<ArgumentException>("IommuCore.DmaUnmapPage", "nothing ever mapped", c => { c.Iommu.DmaUnmapPage(c.Dev, 0xffff_f000, 4096, DmaDataDirection.ToDevice); return null; }),
        X<ArgumentException>("IommuCore.DmaUnmapPage", "an address never handed out", c =>
        {
            ulong h = c.Iommu.DmaMapPage(c.Dev, 0x1000, 4096, DmaDataDirection.ToDevice);
            c.Iommu.DmaUnmapPage(c.Dev, h - 0x10_0000, 4096, DmaDataDirection.ToDevice);
            return null;
        }),
        X<ArgumentException>("IommuCore.DmaUnmapPage", "another size than mapped", c =>
        {
            ulong h = c.Iommu.DmaMapPage(c.Dev, 0x1000, 8192, DmaDataDirection.ToDevice);
            c.Iommu.DmaUnmapPage(c.Dev, h, 4096, DmaDataDirection.ToDevice);
            return null;
        }),
        X<ArgumentException>("IommuCore.DmaUnmapPage", "twice", c =>
        {
            ulong h = c.Iommu.DmaMapPage(c.Dev, 0x1000, 4096, DmaDataDirection.ToDevice);
            c.Iommu.DmaUnmapPage(c.Dev, h, 4096, DmaDataDirection.ToDevice);
            c.Iommu.DmaUnmapPage(c.Dev, h, 4096, DmaDataDirection.ToDevice);
            return null;
        }),
        X<ArgumentException>("IommuCore.DmaUnmapPage", "size 0", c =>
        {
            ulong h = c.Iommu.DmaMapPage(c.Dev, 0x1000, 4096, DmaDataDirection.ToDevice);
            c.Iommu.DmaUnmapPage(c.Dev, h, 0, DmaDataDirection.ToDevice);
            return null;
        }),
        Ok("IommuCore.DmaUnmapPage", "device without an IOMMU (dma-direct: nothing to undo)", c => c.Iommu.DmaUnmapPage(c.Orphan, 0x1000, 4096, DmaDataDirection.ToDevice)),
        V("IommuCore.Capable", "undefined capability", c => c.Iommu.Capable(c.Pci, (IommuCap)99), false),
        X<ArgumentNullException>("IommuCore.Present", "null bus", c => c.Iommu.Present(null!)),

        // IommuCore: device attributes, features, aux
        E("IommuCore.GetDevAttr", "a SET attribute", c => c.Iommu.GetDevAttr(c.Dev, IommuDevAttr.AuxdEnable, out _), Errno.EINVAL),
        E("IommuCore.GetDevAttr", "device without IOMMU ops", c => c.Iommu.GetDevAttr(c.Orphan, IommuDevAttr.AuxdCapability, out _), Errno.ENODEV),
        E("IommuCore.SetDevAttr", "a GET attribute", c => c.Iommu.SetDevAttr(c.Dev, IommuDevAttr.AuxdCapability), Errno.EINVAL),
        E("IommuCore.SetDevAttr", "undefined attribute", c => c.Iommu.SetDevAttr(c.Dev, (IommuDevAttr)77), Errno.EINVAL),
        X<ArgumentNullException>("IommuCore.SetDevAttr", "null device", c => c.Iommu.SetDevAttr(null!, IommuDevAttr.AuxdEnable)),
        V("IommuCore.DevHasFeature", "device without a driver", c => c.Iommu.DevHasFeature(c.Orphan, IommuDevFeature.Aux), false),
        V("IommuCore.DevFeatureEnabled", "undefined feature", c => c.Iommu.DevFeatureEnabled(c.Dev, (IommuDevFeature)9), false),
        E("IommuCore.DevEnableFeature", "SVA (not AUX)", c => c.Iommu.DevEnableFeature(c.Dev, IommuDevFeature.Sva), Errno.ENODEV),
        E("IommuCore.DevEnableFeature", "device without a driver", c => c.Iommu.DevEnableFeature(c.Orphan, IommuDevFeature.Aux), Errno.ENODEV),
        E("IommuCore.DevDisableFeature", "device without a driver", c => c.Iommu.DevDisableFeature(c.Orphan, IommuDevFeature.Aux), Errno.EBUSY),
        E("IommuCore.AttachDeviceAux", "AUX not enabled (is_aux_domain fails)", c => c.Iommu.AttachDeviceAux(c.Domain, c.Dev), Errno.EPERM),
        X<ArgumentNullException>("IommuCore.AttachDeviceAux", "null device", c => c.Iommu.AttachDeviceAux(c.Domain, null!)),
        X<ArgumentNullException>("IommuCore.DetachDeviceAux", "null domain", c => { c.Iommu.DetachDeviceAux(null!, c.Dev); return null; }),
        E("IommuCore.AuxAttachDevice", "AUX not enabled (is_aux_domain fails)", c => c.Iommu.AuxAttachDevice(c.Domain, c.Dev), Errno.EPERM),
        X<ArgumentNullException>("IommuCore.AuxDetachDevice", "null device", c => { c.Iommu.AuxDetachDevice(c.Domain, null!); return null; }),
        E("IommuCore.AuxGetPasid", "never aux-attached", c => c.Iommu.AuxGetPasid(c.Domain, c.Dev), Errno.EINVAL),
        E("IommuCore.DomainGetAttr", "AUXD_ID before any aux attach", c => c.Iommu.DomainGetAttr(c.Domain, DomainAttr.AuxdId, out uint _), Errno.EINVAL),
        X<ArgumentNullException>("IommuCore.DomainGetAttr", "null domain", c => c.Iommu.DomainGetAttr(null!, DomainAttr.Geometry, out IommuDomainGeometry _)),

        // IommuCore: PASID attach (6.2) and global PASIDs (≈6.4)
        E("IommuCore.AttachDevicePasid", "PASID 0 (the driver finds RID2PASID's entry present)", c => c.Iommu.AttachDevicePasid(c.Domain, c.Dev, 0), Errno.EBUSY),
        E("IommuCore.AttachDevicePasid", "PASID 2^32-1 (beyond the device's PASID table)", c => c.Iommu.AttachDevicePasid(c.Domain, c.Dev, uint.MaxValue), Errno.ENODEV),
        E("IommuCore.AttachDevicePasid", "device without a group", c => c.Iommu.AttachDevicePasid(c.Domain, c.Orphan, 1), Errno.ENODEV),
        E("IommuCore.AttachDevicePasid", "device without a PASID capability", c => c.Iommu.AttachDevicePasid(c.Domain, c.Dev2, 1), Errno.EOPNOTSUPP),
        E("IommuCore.AttachDevicePasid", "the same domain twice", c =>
        {
            c.Iommu.AttachDevicePasid(c.Domain, c.Dev, 1).ThrowIfError();
            return c.Iommu.AttachDevicePasid(c.Domain, c.Dev, 1);
        }, Errno.EBUSY),
        X<ArgumentNullException>("IommuCore.AttachDevicePasid", "null domain", c => c.Iommu.AttachDevicePasid(null!, c.Dev, 1)),
        X<ArgumentNullException>("IommuCore.AttachDevicePasid", "null device", c => c.Iommu.AttachDevicePasid(c.Domain, null!, 1)),
        Ok("IommuCore.DetachDevicePasid", "nothing attached (a logged WARN)", c => c.Iommu.DetachDevicePasid(c.Domain, c.Dev, 5)),
        Ok("IommuCore.DetachDevicePasid", "device without a group", c => c.Iommu.DetachDevicePasid(c.Domain, c.Orphan, 5)),
        Ok("IommuCore.DetachDevicePasid", "PASID 2^32-1", c => c.Iommu.DetachDevicePasid(c.Domain, c.Dev, uint.MaxValue)),
        X<ArgumentNullException>("IommuCore.DetachDevicePasid", "null device", c => { c.Iommu.DetachDevicePasid(c.Domain, null!, 1); return null; }),
        E("IommuCore.GetDomainForDevPasid", "type filter that does not match", c =>
        {
            c.Iommu.AttachDevicePasid(c.Domain, c.Dev, 1).ThrowIfError();
            return c.Iommu.GetDomainForDevPasid(c.Dev, 1, DomainType.Dma, out _);
        }, Errno.EBUSY),
        V("IommuCore.GetDomainForDevPasid", "undefined type on an empty slot", c => c.Iommu.GetDomainForDevPasid(c.Dev, 1, (DomainType)99, out IDomain? d) == Errno.None && d is null, true),
        V("IommuCore.GetDomainForDevPasid", "device without a group", c => c.Iommu.GetDomainForDevPasid(c.Orphan, 1, DomainType.Blocked, out IDomain? d) == Errno.None && d is null, true),
        X<ArgumentNullException>("IommuCore.GetDomainForDevPasid", "null device", c => c.Iommu.GetDomainForDevPasid(null!, 1, DomainType.Blocked, out _)),
        V("IommuCore.AllocGlobalPasid", "device without a PASID capability", c => c.Iommu.AllocGlobalPasid(c.Dev2), IommuCore.PasidInvalid),
        V("IommuCore.AllocGlobalPasid", "device never probed", c => c.Iommu.AllocGlobalPasid(c.Orphan), IommuCore.PasidInvalid),
        X<ArgumentNullException>("IommuCore.AllocGlobalPasid", "null device", c => c.Iommu.AllocGlobalPasid(null!)),
        Ok("IommuCore.FreeGlobalPasid", "IOMMU_PASID_INVALID (a logged WARN)", c => c.Iommu.FreeGlobalPasid(IommuCore.PasidInvalid)),
        Ok("IommuCore.FreeGlobalPasid", "never allocated, beyond 20 bits", c => c.Iommu.FreeGlobalPasid(1u << 24)),
        E("IommuCore.SvaBindDevice", "device without a PASID capability", c => c.Iommu.SvaBindDevice(c.Dev2, c.Proc, null, out _), Errno.EINVAL),
        E("IommuCore.SvaBindDevice", "device never probed", c => c.Iommu.SvaBindDevice(c.Orphan, c.Proc, null, out _), Errno.ENODEV),
        E("IommuCore.SvaBindDevice", "process that has exited", c => { c.Proc.Exit(); return c.Iommu.SvaBindDevice(c.Dev, c.Proc, null, out _); }, Errno.EINVAL),
        X<ArgumentNullException>("IommuCore.SvaBindDevice", "null device", c => c.Iommu.SvaBindDevice(null!, c.Proc, null, out _)),
        X<ArgumentNullException>("IommuCore.SvaBindDevice", "null mm", c => c.Iommu.SvaBindDevice(c.Dev, null!, null, out _)),
        X<ArgumentNullException>("IommuCore.SvaUnbindDevice", "null handle", c => { c.Iommu.SvaUnbindDevice(null!); return null; }),
        X<ArgumentNullException>("IommuCore.SvaGetPasid", "null handle", c => c.Iommu.SvaGetPasid(null!)),
        E("IommuCore.DevEnableFeature", "SVA where the unit is not SVM-capable or PASID cannot be enabled", c => c.Iommu.DevEnableFeature(c.Dev, IommuDevFeature.Sva), Errno.ENODEV),
        E("IommuCore.DevEnableFeature", "IOPF without PRI", c => c.Iommu.DevEnableFeature(c.Dev, IommuDevFeature.Iopf), Errno.ENODEV),
        E("IommuCore.DevEnableFeature", "SVA on a device never probed", c => c.Iommu.DevEnableFeature(c.Orphan, IommuDevFeature.Sva), Errno.ENODEV),
        E("IommuCore.DevDisableFeature", "SVA never enabled", c => c.Iommu.DevDisableFeature(c.Dev, IommuDevFeature.Sva), Errno.EINVAL),
        E("IommuCore.DevDisableFeature", "SVA on a device never probed", c => c.Iommu.DevDisableFeature(c.Orphan, IommuDevFeature.Sva), Errno.EBUSY),

        // IommuCore: faults
        X<ArgumentNullException>("IommuCore.SetFaultHandler", "null domain", c => { c.Iommu.SetFaultHandler(null!, null, null); return null; }),
        V("IommuCore.ReportFault", "no handler", c => c.Iommu.ReportFault(c.Domain, c.Dev, 0x1000, IommuFaultAccess.Read), -(int)Errno.ENOSYS),
        E("IommuCore.RegisterDeviceFaultHandler", "device never probed", c => c.Iommu.RegisterDeviceFaultHandler(c.Orphan, (_, _) => Errno.None, null), Errno.EINVAL),
        X<ArgumentNullException>("IommuCore.RegisterDeviceFaultHandler", "null handler", c => c.Iommu.RegisterDeviceFaultHandler(c.Dev, null!, null)),
        E("IommuCore.UnregisterDeviceFaultHandler", "device never probed", c => c.Iommu.UnregisterDeviceFaultHandler(c.Orphan), Errno.EINVAL),
        E("IommuCore.ReportDeviceFault", "no handler", c => c.Iommu.ReportDeviceFault(c.Dev, new IommuFault { Type = IommuFaultType.PageRequest }), Errno.EINVAL),
        X<ArgumentNullException>("IommuCore.ReportDeviceFault", "null fault", c => c.Iommu.ReportDeviceFault(c.Dev, null!)),
        E("IommuCore.PageResponse", "device on no domain with page_response", c => c.Iommu.PageResponse(c.Orphan, new IommuPageResponse()), Errno.ENODEV),
        E("IommuCore.PageResponse", "no fault handler registered", c => c.Iommu.PageResponse(c.Dev, new IommuPageResponse()), Errno.EINVAL),

        // IommuCore: I/O page fault queues (5.15 io-pgfault.c)
        X<ArgumentNullException>("IommuCore.IopfQueueAlloc", "null name", c => c.Iommu.IopfQueueAlloc(null!)),
        Ok("IommuCore.IopfQueueFree", "null queue", c => c.Iommu.IopfQueueFree(null)),
        E("IommuCore.IopfQueueAddDevice", "device never probed", c => c.Iommu.IopfQueueAddDevice(c.Iommu.IopfQueueAlloc("t"), c.Orphan), Errno.ENODEV),
        E("IommuCore.IopfQueueAddDevice", "device already on a queue", c => { c.Iommu.IopfQueueAddDevice(c.Iommu.IopfQueueAlloc("t"), c.Dev2); return c.Iommu.IopfQueueAddDevice(c.Iommu.IopfQueueAlloc("u"), c.Dev2); }, Errno.EBUSY),
        X<ArgumentNullException>("IommuCore.IopfQueueAddDevice", "null queue", c => c.Iommu.IopfQueueAddDevice(null!, c.Dev2)),
        X<ArgumentNullException>("IommuCore.IopfQueueAddDevice", "null device", c => c.Iommu.IopfQueueAddDevice(c.Iommu.IopfQueueAlloc("t"), null!)),
        E("IommuCore.IopfQueueRemoveDevice", "null queue", c => c.Iommu.IopfQueueRemoveDevice(null, c.Dev2), Errno.EINVAL),
        E("IommuCore.IopfQueueRemoveDevice", "device not on the queue", c => c.Iommu.IopfQueueRemoveDevice(c.Iommu.IopfQueueAlloc("t"), c.Dev2), Errno.EINVAL),
        X<ArgumentNullException>("IommuCore.IopfQueueRemoveDevice", "null device", c => c.Iommu.IopfQueueRemoveDevice(c.Iommu.IopfQueueAlloc("t"), null!)),
        E("IommuCore.IopfQueueFlushDev", "device on no queue", c => c.Iommu.IopfQueueFlushDev(c.Dev2), Errno.ENODEV),
        X<ArgumentNullException>("IommuCore.IopfQueueFlushDev", "null device", c => c.Iommu.IopfQueueFlushDev(null!)),
        E("IommuCore.IopfQueueDiscardPartial", "null queue", c => c.Iommu.IopfQueueDiscardPartial(null), Errno.EINVAL),
        E("IommuCore.QueueIopf", "not a page request", c => c.Iommu.QueueIopf(new IommuFault { Type = IommuFaultType.DmaUnrecoverable }, c.Dev2), Errno.EOPNOTSUPP),
        E("IommuCore.QueueIopf", "device on no queue", c => c.Iommu.QueueIopf(new IommuFault { Type = IommuFaultType.PageRequest }, c.Dev2), Errno.ENODEV),
        E("IommuCore.QueueIopf", "cookie that is no device", c => c.Iommu.QueueIopf(new IommuFault { Type = IommuFaultType.PageRequest }, "x"), Errno.ENODEV),
        X<ArgumentNullException>("IommuCore.QueueIopf", "null fault", c => c.Iommu.QueueIopf(null!, c.Dev2)),
        X<ArgumentNullException>("IommuCore.PageResponse", "null response", c => c.Iommu.PageResponse(c.Dev, null!)),
        V("IommuCore.GetResvRegions", "device without a driver", c => c.Iommu.GetResvRegions(c.Orphan).Count, 0),
        X<ArgumentNullException>("IommuCore.GetGroupResvRegions", "null group", c => c.Iommu.GetGroupResvRegions(null!)),

        // IommuCore: groups and probing
        X<ArgumentNullException>("IommuCore.GroupGet", "null", c => c.Iommu.GroupGet(null!)),
        V("IommuCore.GroupGet", "device without a group", c => c.Iommu.GroupGet(c.Orphan), null),
        X<ArgumentNullException>("IommuCore.GroupRefGet", "null", c => c.Iommu.GroupRefGet(null!)),
        Ok("IommuCore.GroupPut", "null is ignored (iommu_group_put)", c => c.Iommu.GroupPut(null!)),
        V("IommuCore.GroupGetById", "id -1", c => c.Iommu.GroupGetById(-1), null),
        V("IommuCore.GroupGetById", "id int.MaxValue", c => c.Iommu.GroupGetById(int.MaxValue), null),
        X<ArgumentNullException>("IommuCore.GroupAddDevice", "null group", c => c.Iommu.GroupAddDevice(null!, c.Orphan)),
        X<ArgumentNullException>("IommuCore.GroupRemoveDevice", "null", c => { c.Iommu.GroupRemoveDevice(null!); return null; }),
        E("IommuCore.PciDeviceGroup", "non-PCI device", c => c.Iommu.PciDeviceGroup(c.Orphan, out _), Errno.EINVAL),
        X<ArgumentNullException>("IommuCore.GenericDeviceGroup", "null", c => c.Iommu.GenericDeviceGroup(null!, out _)),
        E("IommuCore.ProbeDevice", "bus without IOMMU ops", c => c.Iommu.ProbeDevice(c.Orphan), Errno.ENODEV),
        X<ArgumentNullException>("IommuCore.ReleaseDevice", "null", c => { c.Iommu.ReleaseDevice(null!); return null; }),

        // IommuCore: map / unmap / iova_to_phys
        X<ArgumentNullException>("IommuCore.Map", "null domain", c => c.Iommu.Map(null!, 0, 0, 4096, IommuProt.Read)),
        E("IommuCore.Map", "unaligned IOVA", c => c.Iommu.Map(c.Domain, 0x800, 0x1_0000_0000, 4096, IommuProt.Read), Errno.EINVAL),
        E("IommuCore.Map", "unaligned paddr", c => c.Iommu.Map(c.Domain, 0x1000, 0x1_0000_0800, 4096, IommuProt.Read), Errno.EINVAL),
        E("IommuCore.Map", "size 0 maps nothing (as __iommu_map)", c => c.Iommu.Map(c.Domain, 0x1000, 0x1_0000_0000, 0, IommuProt.Read), Errno.None),
        E("IommuCore.Map", "unaligned size", c => c.Iommu.Map(c.Domain, 0x1000, 0x1_0000_0000, 0x1800, IommuProt.Read), Errno.EINVAL),
        E("IommuCore.Map", "IOVA beyond the unattached domain's 57-bit width", c => c.Iommu.Map(c.Domain, 1UL << 57, 0x1_0000_0000, 4096, IommuProt.Read), Errno.EFAULT),
        E("IommuCore.Map", "range wrapping 2^64", c => c.Iommu.Map(c.Domain, ulong.MaxValue - 0xfff, 0x1_0000_0000, 0x2000, IommuProt.Read), Errno.EFAULT),
        V("IommuCore.Unmap", "unaligned IOVA unmaps nothing", c => c.Iommu.Unmap(c.Domain, 0x800, 4096), 0UL),
        V("IommuCore.Unmap", "size 0", c => c.Iommu.Unmap(c.Domain, 0x1000, 0), 0UL),
        V("IommuCore.Unmap", "range wrapping 2^64", c => c.Iommu.Unmap(c.Domain, ulong.MaxValue - 0xfff, 0x2000), 0UL),
        X<ArgumentNullException>("IommuCore.Unmap", "null domain", c => c.Iommu.Unmap(null!, 0, 4096)),
        V("IommuCore.UnmapFast", "unaligned IOVA unmaps nothing", c => { var g = new IommuIotlbGather(); return c.Iommu.UnmapFast(c.Domain, 0x800, 4096, ref g); }, 0UL),
        X<ArgumentNullException>("IommuCore.IotlbSync", "null domain", c => { var g = new IommuIotlbGather(); c.Iommu.IotlbSync(null!, ref g); return null; }),
        X<ArgumentNullException>("IommuCore.FlushIotlbAll", "null domain", c => { c.Iommu.FlushIotlbAll(null!); return null; }),
        Ok("IommuCore.IotlbGatherAddPage", "null domain with an empty gather (no sync needed)", c => { var g = new IommuIotlbGather(); c.Iommu.IotlbGatherAddPage(null!, ref g, 0, 4096); }),
        V("IommuCore.IovaToPhys", "unmapped IOVA", c => c.Iommu.IovaToPhys(c.Domain, 0x1234_5000), 0UL),
        V("IommuCore.IovaToPhys", "IOVA 2^64-1", c => c.Iommu.IovaToPhys(c.Domain, ulong.MaxValue), 0UL),
        X<ArgumentNullException>("IommuCore.IovaToPhys", "null domain", c => c.Iommu.IovaToPhys(null!, 0)),
        X<InvalidOperationException>("IommuCore.PgSize", "no size fits (empty bitmap)", c => IommuCore.PgSize(0, 0, 0, 4096, out _)),

        // Errno helpers
        X<IommuException>("ErrnoExtensions.ThrowIfError", "EINVAL", _ => { Errno.EINVAL.ThrowIfError(); return null; }),
        X<IommuException>("ErrnoExtensions.ThrowIfError", "negative kernel return", _ => (-22).ThrowIfError()),
        V("ErrnoExtensions.FromKernelReturn", "positive value is success", _ => ErrnoExtensions.FromKernelReturn(5), Errno.None),
        V("ErrnoExtensions.ToKernelReturn", "EFAULT", _ => Errno.EFAULT.ToKernelReturn(), -14),
        V("ErrnoExtensions.Describe", "undefined errno is still described", _ => string.IsNullOrEmpty(((Errno)9999).Describe()), false),
        V("IommuIotlbGather.AddRange", "size 0: end = iova + size - 1, as the kernel", _ => { var g = new IommuIotlbGather(); g.AddRange(0x1000, 0); return g.End; }, 0xfffUL),
        V("DomainTypeExtensions.IsPaging", "undefined value answers by its bits (as the kernel's __IOMMU_DOMAIN_PAGING test)", _ => ((DomainType)99).IsPaging(), true),
        V("DomainTypeExtensions.IsDmaApi", "undefined value answers by its bits", _ => ((DomainType)99).IsDmaApi(), true),
        X<ArgumentNullException>("Device..ctor", "null name", _ => new Device(null!)),
    ];
}
