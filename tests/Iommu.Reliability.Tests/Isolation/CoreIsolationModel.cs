using System.Numerics;
using Iommu.Domains;

namespace Iommu.Reliability.Tests.Isolation;

/// <summary>
/// The reference model of one IOMMU domain: its leaves (as runs of equal-sized leaves, so that a
/// 2 MiB range mapped with 4 KiB pages stays one record), whether it has superpages, its aux PASID
/// and the devices it is aux-attached to.
/// </summary>
/// <remarks>
/// The leaf layout matters because <c>iommu_unmap</c> removes the whole page that maps the first
/// IOVA (spec §1.7, intel <c>domain_unmap</c>): the model follows <c>iommu_pgsize</c> and the
/// driver's "grow to the leaf, clear every leaf that intersects" rule, written here independently.
/// </remarks>
internal sealed class ModelDomain(string name, IDomain real, bool identity, bool superpages)
{
    public const ulong Sz4K = 4096, Sz2M = 2UL << 20, Sz1G = 1UL << 30;

    private readonly List<Run> _runs = [];

    public string Name { get; } = name;

    public IDomain Real { get; } = real;

    public bool Identity { get; } = identity;

    /// <summary>2 MiB / 1 GiB pages in the bitmap and in the page table: set on the first attach to a unit (domain_update_iommu_cap).</summary>
    public bool Superpages { get; set; } = superpages;

    /// <summary>The aux PASID (DOMAIN_ATTR_AUXD_ID), 0 when none.</summary>
    public uint Pasid { get; set; }

    /// <summary>Aux attachments by device index.</summary>
    public Dictionary<int, AuxLink> Links { get; } = [];

    public IReadOnlyList<Run> Runs => _runs;

    public ulong Bitmap => Superpages ? Sz4K | Sz2M | Sz1G : Sz4K;

    /// <summary>The leaf mapping <paramref name="iova"/>, if any.</summary>
    public bool TryFind(ulong iova, out ulong leafIova, out ulong leafSize, out ulong pa, out IommuProt prot)
    {
        foreach (Run r in _runs)
        {
            if (iova >= r.Iova && iova - r.Iova < r.Size)
            {
                leafIova = r.Iova + ((iova - r.Iova) & ~(r.Leaf - 1));
                leafSize = r.Leaf;
                pa = r.Pa + (iova - r.Iova);
                prot = r.Prot;
                return true;
            }
        }

        leafIova = leafSize = pa = 0;
        prot = IommuProt.None;
        return false;
    }

    public bool Intersects(ulong iova, ulong size)
    {
        foreach (Run r in _runs)
        {
            if (iova < r.Iova + r.Size && r.Iova < iova + size)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>A successful <c>iommu_map</c> of a free range: the largest aligned leaf at each step (<c>__domain_mapping</c>).</summary>
    public void Map(ulong iova, ulong pa, ulong size, IommuProt prot)
    {
        while (size != 0)
        {
            ulong leaf = Sz4K;
            foreach (ulong s in (ReadOnlySpan<ulong>)[Sz1G, Sz2M])
            {
                if (Superpages && ((iova | pa) & (s - 1)) == 0 && size >= s)
                {
                    leaf = s;
                    break;
                }
            }

            // Extend a run of the same leaf size when contiguous, else start one.
            ulong take = leaf;
            if (leaf == Sz4K)
            {
                // 4 KiB leaves up to the next point where a superpage could start.
                while (take < size && !(Superpages && (((iova + take) | (pa + take)) & (Sz2M - 1)) == 0 && size - take >= Sz2M))
                {
                    take += Sz4K;
                }
            }

            _runs.Add(new Run(iova, take, pa, leaf, prot));
            iova += take;
            pa += take;
            size -= take;
        }
    }

    /// <summary>The model of <c>iommu_unmap</c>: bytes unmapped, and the removed leaves in <paramref name="removed"/>.</summary>
    public ulong Unmap(ulong iova, ulong size, List<ulong> removed)
    {
        ulong unmapped = 0;
        while (unmapped < size)
        {
            ulong pgsize = PgSize(Bitmap, iova, iova, size - unmapped, out ulong count);
            ulong r = PageTableUnmap(iova, pgsize * count, removed);
            if (r == 0)
            {
                break;
            }

            iova += r;
            unmapped += r;
        }

        return unmapped;
    }

    /// <summary><c>iommu_pgsize</c> (spec §1.7), written again for the model.</summary>
    public static ulong PgSize(ulong bitmap, ulong iova, ulong paddr, ulong size, out ulong count)
    {
        ulong merge = iova | paddr;
        ulong sizes = bitmap & Mask(BitOperations.Log2(size));
        if (merge != 0)
        {
            sizes &= Mask(BitOperations.TrailingZeroCount(merge));
        }

        int idx = BitOperations.Log2(sizes);
        ulong larger = bitmap & ~Mask(idx);
        if (larger != 0)
        {
            ulong next = 1UL << BitOperations.TrailingZeroCount(larger);
            if (((iova ^ paddr) & (next - 1)) == 0)
            {
                ulong offset = next - (merge & (next - 1));
                if (offset + next <= size)
                {
                    size = offset;
                }
            }
        }

        count = size >> idx;
        return 1UL << idx;

        static ulong Mask(int high) => high >= 63 ? ulong.MaxValue : (2UL << high) - 1;
    }

    // intel_iommu_unmap_pages → domain_unmap: 0 when iova is not mapped; the exact leaf when the
    // range is it; else grow the range to the leaf and clear every leaf intersecting
    // [iova & ~(leaf-1), iova + size - 1]. Returns the (grown) size.
    private ulong PageTableUnmap(ulong iova, ulong size, List<ulong> removed)
    {
        if (!TryFind(iova, out ulong leafIova, out ulong leaf, out _, out _))
        {
            return 0;
        }

        if (size <= leaf && leafIova == iova)
        {
            RemoveLeaves(iova, iova + leaf - 1, removed);
            return leaf;
        }

        size = Math.Max(size, leaf);
        RemoveLeaves(iova & ~(leaf - 1), iova + size - 1, removed);
        return size;
    }

    private void RemoveLeaves(ulong lo, ulong hi, List<ulong> removed)
    {
        for (int i = _runs.Count - 1; i >= 0; i--)
        {
            Run r = _runs[i];
            ulong last = r.Iova + r.Size - 1;
            if (hi < r.Iova || lo > last)
            {
                continue;
            }

            ulong n = r.Size / r.Leaf;
            ulong kf = lo > r.Iova ? (lo - r.Iova) / r.Leaf : 0;
            ulong kl = Math.Min(n - 1, (hi - r.Iova) / r.Leaf);
            _runs.RemoveAt(i);
            if (kf > 0)
            {
                _runs.Add(r with { Size = kf * r.Leaf });
            }

            if (kl + 1 < n)
            {
                ulong off = (kl + 1) * r.Leaf;
                _runs.Add(r with { Iova = r.Iova + off, Pa = r.Pa + off, Size = r.Size - off });
            }

            // A few addresses of what went away, for stale-translation probes.
            removed.Add(r.Iova + (kf * r.Leaf));
            if (kl > kf)
            {
                removed.Add(r.Iova + (kl * r.Leaf));
            }
        }
    }

    /// <summary>A run of equal leaves: [Iova, Iova + Size) → [Pa, Pa + Size), leaves of <see cref="Leaf"/> bytes.</summary>
    internal readonly record struct Run(ulong Iova, ulong Size, ulong Pa, ulong Leaf, IommuProt Prot);
}

/// <summary>An aux attachment of (domain, device): the user count and whether its PASID entry is live in the device's current PASID table.</summary>
internal sealed class AuxLink
{
    public int Users { get; set; }

    /// <summary>False once the device's RID domain changed (the PASID table, aux entries included, was freed; 5.15 behaves alike).</summary>
    public bool Programmed { get; set; }
}

/// <summary>The reference model of one PCI device.</summary>
internal sealed class ModelDevice(int index, Devices.PciDevice real, ModelDomain defaultDomain)
{
    public int Index { get; } = index;

    public Devices.PciDevice Real { get; } = real;

    public ModelDomain Default { get; } = defaultDomain;

    /// <summary>The RID domain (group->domain and the driver's device info agree in every sequence we generate).</summary>
    public ModelDomain Rid { get; set; } = defaultDomain;

    /// <summary><c>info->auxd_enabled</c>: lost whenever the RID domain changes (a new device info).</summary>
    public bool AuxEnabled { get; set; }
}
