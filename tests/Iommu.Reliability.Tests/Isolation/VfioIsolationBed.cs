using System.Buffers.Binary;
using System.Globalization;
using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using SiovAccel;
using Vfio.Mdev;
using Vfio.Type1;
using Vfio.Type1.Uapi;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>
/// One sample of the VFIO-level isolation property: VT-d in scalable mode with intel-iommu, a
/// Scalable-IOV parent (samples/SiovAccel, IOMMU-aware mdevs on aux domains), a type1 container per
/// guest process, mdev create/remove, group join/leave, MAP_DMA/UNMAP_DMA of process memory, and
/// DMA with each guest's PASID. Invariant: an ADI's DMA reaches exactly the host page pinned for
/// its guest's IOVA (read back through the guest process), and faults otherwise.
/// </summary>
internal sealed class VfioIsolationBed : IDisposable
{
    public const uint NeverPasid = 1000;
    private const ulong Page = 4096;

    private readonly Platform _platform;
    private readonly IommuCore _iommu;
    private readonly PciDevice _parent;
    private readonly MdevCore _mdev;
    private readonly MdevType _type;
    private readonly VfioCore _vfio;
    private readonly Guest[] _guests = new Guest[VfioOp.Guests];
    private readonly Slot[] _slots = new Slot[VfioOp.Slots];
    private ulong _pattern = 0x7E57_0000_0000_0000;

    public VfioIsolationBed()
    {
        _platform = new Platform(new PlatformOptions { MemorySize = 8 * Sizes.GiB, TableMemorySize = 16 * Sizes.MiB });
        _iommu = _platform.Iommu;
        PciBus pci = _platform.AddPciBus();
        var unit = new VtdUnit(_platform.Memory, VtdConfig.ScalableMode48Bit);
        pci.AddDmaRemapper(unit, includeAll: true);
        pci.SetIommuOps(new IntelIommu(_platform, unit)).ThrowIfError();
        _parent = pci.AddDevice(new PciDeviceSpec("0000:00:04.0") { PasidWidth = 16, ScalableIov = true, Acs = true });
        _mdev = new MdevCore(_platform);
        _mdev.RegisterDevice(_parent, new SiovAccelDriver(_iommu, _parent, adiCount: VfioOp.Slots)).ThrowIfError();
        _type = _mdev.FindParent(_parent)!.FindType("siov_accel-wq")!;
        _vfio = new VfioCore(_platform, new VfioType1Options { AllowUnsafeInterrupts = true });
        HostPageAllocator pages = HostPageAllocator.ForPlatform(_platform, 4 * Sizes.GiB, 64 * Sizes.MiB);
        for (int g = 0; g < _guests.Length; g++)
        {
            var proc = new ProcessAddressSpace(pages, $"qemu{g}");
            ulong buf = proc.Mmap(VfioOp.BufferPages * Page);
            for (ulong i = 0; i < VfioOp.BufferPages; i++)
            {
                proc.Write(buf + (i * Page), BitConverter.GetBytes(i)).ThrowIfError(); // fault the pages in
            }

            _guests[g] = new Guest(proc, _vfio.OpenContainer(proc, out _), buf);
        }

        for (int s = 0; s < _slots.Length; s++)
        {
            _slots[s] = new Slot();
        }
    }

    public int Executed { get; private set; }

    public static ulong Iova(int page) => page < 16 ? 0x10_0000 + ((ulong)page * Page) : 0x4000_0000 + ((ulong)(page - 16) * Page);

    public void Dispose() => _platform.Dispose();

    public void Run(IReadOnlyList<VfioOp> ops)
    {
        for (int i = 0; i < ops.Count; i++)
        {
            try
            {
                if (Step(ops[i]))
                {
                    Executed++;
                }
            }
            catch (IsolationViolationException e)
            {
                throw new IsolationViolationException($"[vfio] op #{i} {ops[i]}: {e.Message}");
            }
        }
    }

    private static void Expect(Errno expected, Errno actual, string what)
    {
        if (expected != actual)
        {
            throw new IsolationViolationException($"{what}: expected {expected}, got {actual} ({ErrorDetail.LastMessage})");
        }
    }

    private static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);

    private bool Step(VfioOp op)
    {
        switch (op)
        {
            case MdevCreateOp c:
            {
                Slot s = _slots[c.Slot];
                if (s.Mdev is not null)
                {
                    return false;
                }

                Expect(Errno.None, _mdev.Create(_type, Guid.NewGuid(), out MdevDevice? m), "mdev create");
                Expect(Errno.None, _vfio.RegisterDevice(m!), "vfio_register_group_dev");
                s.Mdev = m;
                s.LastPasid = null;
                return true;
            }

            case MdevRemoveOp r:
            {
                Slot s = _slots[r.Slot];
                if (s.Mdev is null || s.Guest is not null)
                {
                    return false;
                }

                Expect(Errno.None, _mdev.Remove(s.Mdev), "mdev remove");
                s.Mdev = null;
                return true;
            }

            case JoinOp j:
                return Join(_slots[j.Slot], _guests[j.Guest]);

            case LeaveOp l:
                return Leave(_slots[l.Slot]);

            case MapDmaOp m:
                return MapDma(m);

            case UnmapDmaOp u:
                return UnmapDma(u);

            case AdiDmaOp d:
                Dma(d);
                return true;

            default:
                throw new ArgumentException($"unknown op {op}", nameof(op));
        }
    }

    private bool Join(Slot s, Guest g)
    {
        if (s.Mdev is null || s.Guest is not null)
        {
            return false;
        }

        Expect(Errno.None, _vfio.OpenGroup(g.Proc, s.Mdev.IommuGroup!.Id, out VfioGroup? group, out _), "open group");
        Expect(Errno.None, group!.SetContainer(g.Container), "SET_CONTAINER");
        if (g.Container.Backend is null)
        {
            Expect(Errno.None, g.Container.SetIommu(VfioUapi.VFIO_TYPE1v2_IOMMU), "SET_IOMMU");
        }

        Expect(Errno.None, group.GetDeviceFd(g.Proc, s.Mdev.Name, out VfioDeviceFile? file, out _), "GET_DEVICE_FD");
        IDomain domain = s.Mdev.GetIommuDomain() ?? throw new IsolationViolationException("the mdev has no aux domain after joining");
        int pasid = _iommu.AuxGetPasid(domain, _parent);
        if (pasid <= 0)
        {
            throw new IsolationViolationException($"aux_get_pasid = {pasid}");
        }

        if (g.Members == 0)
        {
            if (Array.Exists(_guests, x => x != g && x.Members > 0 && x.Pasid == (uint)pasid))
            {
                throw new IsolationViolationException($"guest got PASID {pasid}, which another live guest has");
            }

            g.Pasid = (uint)pasid;
        }
        else if (g.Pasid != (uint)pasid)
        {
            throw new IsolationViolationException($"a second mdev of the guest got PASID {pasid}, the guest has {g.Pasid}");
        }

        g.Members++;
        s.Guest = g;
        s.Group = group;
        s.File = file;
        s.LastPasid = (uint)pasid;
        return true;
    }

    private static bool Leave(Slot s)
    {
        if (s.Guest is not Guest g)
        {
            return false;
        }

        Expect(Errno.None, s.File!.Close(), "close device fd");
        Expect(Errno.None, s.Group!.UnsetContainer(), "UNSET_CONTAINER");
        Expect(Errno.None, s.Group.Close(), "close group");
        s.Guest = null;
        s.Group = null;
        s.File = null;
        if (--g.Members == 0)
        {
            // The last group left: the type1 backend is released with every mapping (and the aux domain with its PASID).
            g.Maps.Clear();
            g.Pasid = 0;
        }

        return true;
    }

    private bool MapDma(MapDmaOp op)
    {
        Guest g = _guests[op.Guest];
        ulong iova = Iova(op.IovaPage), size = (ulong)op.Pages * Page;
        if (Iova(op.IovaPage + op.Pages - 1) != iova + size - Page || g.Maps.Exists(m => iova < m.Iova + m.Size && m.Iova < iova + size))
        {
            return false; // crosses the pool's gap, or overlaps a mapping (type1 says -EEXIST; not what we probe here)
        }

        ulong va = g.Buffer + ((ulong)op.BufPage * Page);
        uint flags = VfioUapi.VFIO_DMA_MAP_FLAG_READ | (op.Write ? VfioUapi.VFIO_DMA_MAP_FLAG_WRITE : 0);
        Errno expected = g.Members > 0 ? Errno.None : Errno.EINVAL;
        Expect(expected, g.Container.MapDma(new VfioIommuType1DmaMap(32, flags, va, iova, size)), "MAP_DMA");
        if (expected == Errno.None)
        {
            g.Maps.Add(new GuestMap(iova, size, va, op.Write));
        }

        return true;
    }

    private bool UnmapDma(UnmapDmaOp op)
    {
        Guest g = _guests[op.Guest];
        ulong iova, size;
        if (op.Exact && g.Maps.Count > 0)
        {
            GuestMap m = g.Maps[op.Index % g.Maps.Count];
            (iova, size) = (m.Iova, m.Size);
        }
        else
        {
            iova = Iova(op.Index);
            size = Page;
            if (g.Maps.Exists(m => iova < m.Iova + m.Size && m.Iova < iova + size))
            {
                return false;
            }
        }

        var unmap = new VfioIommuType1DmaUnmap(24, 0, iova, size);
        Errno expected = g.Members > 0 ? Errno.None : Errno.EINVAL;
        Expect(expected, g.Container.UnmapDma(ref unmap), $"UNMAP_DMA {Hex(iova)}+{Hex(size)}");
        if (expected == Errno.None)
        {
            ulong removed = 0;
            foreach (GuestMap m in g.Maps.Where(m => m.Iova >= iova && m.Iova + m.Size <= iova + size).ToArray())
            {
                g.Maps.Remove(m);
                removed += m.Size;
            }

            if (unmap.Size != removed)
            {
                throw new IsolationViolationException($"UNMAP_DMA reported {Hex(unmap.Size)} bytes, model {Hex(removed)}");
            }
        }

        return true;
    }

    private void Dma(AdiDmaOp op)
    {
        Slot s = _slots[op.Slot];
        uint pasid = s.Guest?.Pasid ?? s.LastPasid ?? NeverPasid;
        ulong iova = Iova(op.IovaPage) + (ulong)op.Offset;
        Guest? reach = Array.Find(_guests, g => g.Members > 0 && g.Pasid == pasid);
        int at = reach?.Maps.FindIndex(m => iova >= m.Iova && iova < m.Iova + m.Size) ?? -1;
        GuestMap? map = at >= 0 ? reach!.Maps[at] : null;
        bool ok = map is not null && (!op.Write || map.Value.Write);
        string what = $"DMA {(op.Write ? "write" : "read")} PASID {pasid} iova {Hex(iova)} (model: {(ok ? "ok" : "fault")}, {(reach is null ? "no guest has the PASID" : map is null ? "guest does not map it" : $"guest maps it at va {Hex(map.Value.Va + (iova - map.Value.Iova))}")})";

        Span<byte> buf = stackalloc byte[8];
        ulong pattern = ++_pattern;
        ulong va = map is GuestMap gm ? gm.Va + (iova - gm.Iova) : 0;
        DmaResult r;
        if (op.Write)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(buf, pattern);
            r = _parent.DmaWrite(pasid, iova, buf);
        }
        else
        {
            if (ok)
            {
                reach!.Proc.Write(va, BitConverter.GetBytes(pattern)).ThrowIfError();
            }

            r = _parent.DmaRead(pasid, iova, buf);
        }

        if (r.IsOk != ok)
        {
            throw new IsolationViolationException($"{what}: got {r.Status} (pa {Hex(r.Address)})");
        }

        if (!ok)
        {
            return;
        }

        Span<byte> seen = stackalloc byte[8];
        if (op.Write)
        {
            reach!.Proc.Read(va, seen).ThrowIfError();
        }
        else
        {
            buf.CopyTo(seen);
        }

        if (BinaryPrimitives.ReadUInt64LittleEndian(seen) != pattern || !reach!.Proc.TryTranslate(va, out ulong pfn) || r.Address != (pfn * Page) + (va % Page))
        {
            throw new IsolationViolationException($"{what}: did not reach the guest's pinned page (pa {Hex(r.Address)}, saw {Hex(BinaryPrimitives.ReadUInt64LittleEndian(seen))}, expected {Hex(pattern)})");
        }
    }

    private sealed class Guest(ProcessAddressSpace proc, VfioContainer container, ulong buffer)
    {
        public ProcessAddressSpace Proc { get; } = proc;

        public VfioContainer Container { get; } = container;

        public ulong Buffer { get; } = buffer;

        public int Members { get; set; }

        public uint Pasid { get; set; }

        public List<GuestMap> Maps { get; } = [];
    }

    private sealed class Slot
    {
        public MdevDevice? Mdev { get; set; }

        public Guest? Guest { get; set; }

        public VfioGroup? Group { get; set; }

        public VfioDeviceFile? File { get; set; }

        public uint? LastPasid { get; set; }
    }

    private readonly record struct GuestMap(ulong Iova, ulong Size, ulong Va, bool Write);
}
