using Iommu;
using Iommu.Devices;
using Iommu.Domains;
using Vfio.Mdev;
using Vfio.Type1.Uapi;
using DmaTree = Iommu.Internal.RangeTree<Vfio.Type1.VfioDma>;

namespace Vfio.Type1;

public sealed partial class VfioIommuType1
{
    /// <summary>Attaches a group (<c>vfio_iommu_type1_attach_group</c>, checks in kernel order).</summary>
    /// <param name="group">The VFIO group.</param>
    /// <returns>0 or -EINVAL/-EIO/-EPERM/-EBUSY and driver errors.</returns>
    [KernelSymbol("vfio_iommu_type1_attach_group")]
    internal Errno AttachGroup(VfioGroup group)
    {
        lock (_lock)
        {
            if (FindGroup(group, out _) is not null)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"{group} is already in the container");
            }

            IReadOnlyList<Device> devices = group.IommuGroup.Devices;
            if (devices.Count == 0)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"{group} has no devices");
            }

            Bus? bus = devices[0].Bus;
            foreach (Device d in devices)
            {
                if (d.Bus != bus)
                {
                    return ErrorDetail.Fail(Errno.EINVAL, $"{group}: devices on different buses");
                }
            }

            bool mdevGroup = VfioCore.IsMdev(devices[0]);
            var entry = new GroupEntry(group, mdevGroup);
            if (mdevGroup)
            {
                Device? iommuDevice = MdevIommuDevice(devices);
                if (iommuDevice is null)
                {
                    // External domain: vendor isolation; nothing is pinned or mapped.
                    if (_external is null)
                    {
                        _external = new DomainEntry();
                        UpdatePgsizeBitmap();
                    }

                    entry.PinnedPageDirtyScope = true;
                    _external.Groups.Add(entry);
                    return Errno.None;
                }

                entry.IommuDevice = iommuDevice;
                bus = iommuDevice.Bus;
            }

            if (bus is null)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"{group}: no bus");
            }

            IDomain? domain = _iommu.DomainAlloc(bus);
            if (domain is null)
            {
                return ErrorDetail.Fail(Errno.EIO, $"iommu_domain_alloc({bus.Name}) failed");
            }

            if (Nesting)
            {
                // iommu_enable_nesting: the modelled VT-d has no nested translation (5.15: the attach fails -EINVAL).
                _iommu.DomainFree(domain);
                return ErrorDetail.Fail(Errno.EINVAL, "TYPE1_NESTING: the IOMMU has no nested translation");
            }

            Errno e = AttachTo(domain, entry);
            if (e != Errno.None)
            {
                // Cleanup runs core calls that record or forget details of their own: the reason
                // reported is the first failure's (as for every unwind below).
                using (ErrorDetail.PreserveWhileUnwinding())
                {
                    _iommu.DomainFree(domain);
                }

                return e;
            }

            e = PrepareIovaList(domain, group, out List<VfioIovaRange>? newList);

            // msi_remap = irq_domain_check_msi_remap() || iommu_capable(bus, IOMMU_CAP_INTR_REMAP), checked after the attach as in 5.15.
            bool unsafeInterrupts = e == Errno.None && !_options.AllowUnsafeInterrupts && !_options.MsiRemap && !_iommu.Capable(bus, IommuCap.IntrRemap);
            if (e != Errno.None || unsafeInterrupts)
            {
                using (ErrorDetail.PreserveWhileUnwinding())
                {
                    DetachFrom(domain, entry);
                    _iommu.DomainFree(domain);
                }

                return unsafeInterrupts
                    ? ErrorDetail.Fail(Errno.EPERM, $"{group}: no interrupt remapping on {bus.Name} (the IOMMU does not report IOMMU_CAP_INTR_REMAP and VfioType1Options.MsiRemap is false); set VfioType1Options.AllowUnsafeInterrupts = true to attach anyway (the allow_unsafe_interrupts module parameter)")
                    : e;
            }

            var de = new DomainEntry { Domain = domain, Prot = _iommu.Capable(bus, IommuCap.CacheCoherency) ? IommuProt.Cache : IommuProt.None };

            // Reuse a compatible domain (same ops and prot).
            foreach (DomainEntry d in _domains)
            {
                if (d.Domain!.Ops != domain.Ops || d.Prot != de.Prot)
                {
                    continue;
                }

                DetachFrom(domain, entry);
                if (AttachTo(d.Domain, entry) == Errno.None)
                {
                    _iommu.DomainFree(domain);
                    d.Groups.Add(entry);
                    InstallIovaList(newList!);
                    _numNonPinnedGroups++;
                    return Errno.None;
                }

                e = AttachTo(domain, entry);
                if (e != Errno.None)
                {
                    using (ErrorDetail.PreserveWhileUnwinding())
                    {
                        _iommu.DomainFree(domain);
                    }

                    return e;
                }
            }

            e = Replay(de);
            if (e != Errno.None)
            {
                using (ErrorDetail.PreserveWhileUnwinding())
                {
                    DetachFrom(domain, entry);
                    _iommu.DomainFree(domain);
                }

                return e;
            }

            de.Groups.Add(entry);
            _domains.Insert(0, de);
            UpdatePgsizeBitmap();
            InstallIovaList(newList!);
            _numNonPinnedGroups++;
            return Errno.None;
        }
    }

    /// <summary>Detaches a group (<c>vfio_iommu_type1_detach_group</c>). Cannot fail.</summary>
    /// <param name="group">The VFIO group.</param>
    [KernelSymbol("vfio_iommu_type1_detach_group")]
    internal void DetachGroup(VfioGroup group)
    {
        lock (_lock)
        {
            DomainEntry? de = FindGroup(group, out GroupEntry? entry);
            if (de is null || entry is null)
            {
                return;
            }

            de.Groups.Remove(entry);
            if (de == _external)
            {
                if (de.Groups.Count == 0)
                {
                    if (_domains.Count == 0)
                    {
                        RemoveAllDmas();
                    }

                    _external = null;
                    UpdatePgsizeBitmap();
                }
            }
            else
            {
                DetachFrom(de.Domain!, entry);
                if (de.Groups.Count == 0)
                {
                    if (_domains.Count == 1)
                    {
                        if (_external is null)
                        {
                            RemoveAllDmas();
                        }
                        else
                        {
                            UnmapUnpinReaccount();
                        }
                    }

                    // Any other domain is freed as 5.15 frees it, without iommu_unmap: the pins stay for the
                    // remaining domains, and freeing drops its mappings (not counted by iommu.unmap.*).
                    _domains.Remove(de);
                    _iommu.DomainFree(de.Domain!);
                    UpdatePgsizeBitmap();
                }
            }

            RebuildIovaList();
            if (!entry.PinnedPageDirtyScope)
            {
                _numNonPinnedGroups--;
                if (DirtyTracking)
                {
                    foreach (VfioDma dma in _dmas)
                    {
                        if (dma.Bitmap is not null)
                        {
                            SetBits(dma.Bitmap, 0, dma.Size / MinPageSize);
                        }
                    }
                }
            }
        }
    }

    private DomainEntry? FindGroup(VfioGroup group, out GroupEntry? entry)
    {
        foreach (DomainEntry d in _domains)
        {
            foreach (GroupEntry g in d.Groups)
            {
                if (g.Group == group)
                {
                    entry = g;
                    return d;
                }
            }
        }

        if (_external is not null)
        {
            foreach (GroupEntry g in _external.Groups)
            {
                if (g.Group == group)
                {
                    entry = g;
                    return _external;
                }
            }
        }

        entry = null;
        return null;
    }

    // vfio_mdev_iommu_device: the common IOMMU device of every mdev, or null (no device, or two different ones).
    private static Device? MdevIommuDevice(IReadOnlyList<Device> devices)
    {
        Device? found = null;
        foreach (Device d in devices)
        {
            Device? iommuDevice = MdevDevice.FromDevice(d)?.GetIommuDevice();
            if (iommuDevice is null || (found is not null && found != iommuDevice))
            {
                return null;
            }

            found = iommuDevice;
        }

        return found;
    }

    // vfio_iommu_attach_group: the IOMMU group for physical groups; for mdevs aux attach to the parent
    // (AUX enabled) or a normal attach of the parent, then mdev_set_iommu_domain (seed).
    private Errno AttachTo(IDomain domain, GroupEntry entry)
    {
        if (!entry.MdevGroup)
        {
            return _iommu.AttachGroup(domain, entry.Group.IommuGroup);
        }

        IReadOnlyList<Device> devices = entry.Group.IommuGroup.Devices;
        for (int i = 0; i < devices.Count; i++)
        {
            MdevDevice mdev = MdevDevice.FromDevice(devices[i])!;
            Errno e = mdev.GetIommuDomain() is not null
                ? ErrorDetail.Fail(Errno.EINVAL, $"mdev {mdev.Name} already holds an IOMMU domain")
                : MdevAttachDomain(domain, mdev);
            if (e != Errno.None)
            {
                using (ErrorDetail.PreserveWhileUnwinding())
                {
                    for (int j = 0; j < i; j++)
                    {
                        MdevDetachDomain(domain, MdevDevice.FromDevice(devices[j])!);
                    }
                }

                return e;
            }
        }

        return Errno.None;
    }

    [KernelSymbol("vfio_mdev_attach_domain")]
    private Errno MdevAttachDomain(IDomain domain, MdevDevice mdev)
    {
        Device? iommuDevice = mdev.GetIommuDevice();
        if (iommuDevice is null)
        {
            return ErrorDetail.Fail(Errno.EINVAL, $"mdev {mdev.Name} has no IOMMU device");
        }

        Errno e = _iommu.DevFeatureEnabled(iommuDevice, IommuDevFeature.Aux)
            ? _iommu.AttachDeviceAux(domain, iommuDevice)
            : _iommu.AttachDevice(domain, iommuDevice);
        if (e == Errno.None)
        {
            mdev.SetIommuDomain(domain);
        }

        return e;
    }

    [KernelSymbol("vfio_mdev_detach_domain")]
    private void MdevDetachDomain(IDomain domain, MdevDevice mdev)
    {
        Device? iommuDevice = mdev.GetIommuDevice();
        if (iommuDevice is not null)
        {
            if (_iommu.DevFeatureEnabled(iommuDevice, IommuDevFeature.Aux))
            {
                _iommu.DetachDeviceAux(domain, iommuDevice);
            }
            else
            {
                _iommu.DetachDevice(domain, iommuDevice);
            }
        }

        mdev.SetIommuDomain(null);
    }

    private void DetachFrom(IDomain domain, GroupEntry entry)
    {
        if (!entry.MdevGroup)
        {
            _iommu.DetachGroup(domain, entry.Group.IommuGroup);
            return;
        }

        foreach (Device d in entry.Group.IommuGroup.Devices)
        {
            MdevDetachDomain(domain, MdevDevice.FromDevice(d)!);
        }
    }

    // Steps 8-10: geometry conflict, reserved-region conflict, the new IOVA list.
    private Errno PrepareIovaList(IDomain domain, VfioGroup group, out List<VfioIovaRange>? newList)
    {
        newList = null;
        IommuDomainGeometry geo = domain.Geometry;
        ulong start = geo.ApertureStart, end = geo.ApertureEnd;
        if (_iovaList.Count > 0)
        {
            if (start > _iovaList[^1].End || end < _iovaList[0].Start)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"aperture 0x{start:x}..0x{end:x} is disjoint from the container's IOVA ranges");
            }
        }

        foreach (VfioDma d in _dmas)
        {
            if (d.Iova < start || d.Iova + d.Size - 1 > end)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"mapping 0x{d.Iova:x}+0x{d.Size:x} lies outside the new aperture 0x{start:x}..0x{end:x}");
            }
        }

        IReadOnlyList<IommuResvRegion> resv = _iommu.GetGroupResvRegions(group.IommuGroup);
        foreach (IommuResvRegion r in resv)
        {
            if (r.Type != IommuResvType.DirectRelaxable && FindDma(r.Start, r.Length) is not null)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"an existing mapping overlaps reserved region 0x{r.Start:x}..0x{r.End:x}");
            }
        }

        var list = new List<VfioIovaRange>(_iovaList.Count == 0 ? [new VfioIovaRange(start, end)] : _iovaList);
        ClipList(list, start, end);
        foreach (IommuResvRegion r in resv)
        {
            if (r.Type != IommuResvType.DirectRelaxable)
            {
                RemoveFromList(list, r.Start, r.End);
            }
        }

        if (list.Count == 0)
        {
            return ErrorDetail.Fail(Errno.EINVAL, "no valid IOVA range left after removing reserved regions");
        }

        newList = list;
        return Errno.None;
    }

    private void InstallIovaList(List<VfioIovaRange> list)
    {
        _iovaList.Clear();
        _iovaList.AddRange(list);
    }

    // Aperture of the remaining domains minus every remaining IOMMU-backed group's reserved regions.
    private void RebuildIovaList()
    {
        _iovaList.Clear();
        if (_domains.Count == 0)
        {
            if (_external is not null)
            {
                _iovaList.Add(new VfioIovaRange(0, ulong.MaxValue));
            }

            return;
        }

        ulong start = 0, end = ulong.MaxValue;
        foreach (DomainEntry d in _domains)
        {
            start = Math.Max(start, d.Domain!.Geometry.ApertureStart);
            end = Math.Min(end, d.Domain.Geometry.ApertureEnd);
        }

        _iovaList.Add(new VfioIovaRange(start, end));
        foreach (DomainEntry d in _domains)
        {
            foreach (GroupEntry g in d.Groups)
            {
                foreach (IommuResvRegion r in _iommu.GetGroupResvRegions(g.Group.IommuGroup))
                {
                    if (r.Type != IommuResvType.DirectRelaxable)
                    {
                        RemoveFromList(_iovaList, r.Start, r.End);
                    }
                }
            }
        }
    }

    private static void ClipList(List<VfioIovaRange> list, ulong start, ulong end)
    {
        for (int i = list.Count - 1; i >= 0; i--)
        {
            VfioIovaRange r = list[i];
            if (r.End < start || r.Start > end)
            {
                list.RemoveAt(i);
            }
            else
            {
                list[i] = new VfioIovaRange(Math.Max(r.Start, start), Math.Min(r.End, end));
            }
        }
    }

    private static void RemoveFromList(List<VfioIovaRange> list, ulong start, ulong end)
    {
        for (int i = list.Count - 1; i >= 0; i--)
        {
            VfioIovaRange r = list[i];
            if (r.End < start || r.Start > end)
            {
                continue;
            }

            list.RemoveAt(i);
            if (r.End > end)
            {
                list.Insert(i, new VfioIovaRange(end + 1, r.End));
            }

            if (r.Start < start)
            {
                list.Insert(i, new VfioIovaRange(r.Start, start - 1));
            }
        }
    }

    // vfio_iommu_replay: map every existing mapping into the new domain; unwind fully on failure.
    [KernelSymbol("vfio_iommu_replay")]
    private Errno Replay(DomainEntry de)
    {
        while (_vaddrInvalidCount > 0)
        {
            if (!_containerOpen)
            {
                return ErrorDetail.Fail(Errno.EFAULT, "replay: waiting for an invalidated vaddr, but the container was closed");
            }

            Monitor.Wait(_lock);
        }

        IDomain domain = de.Domain!;
        int done = DmaTree.Nil; // the mapping the replay stopped at
        Errno e = Errno.None;
        var newlyPinned = new HashSet<VfioDma>();
        for (done = _dmas.First(); done != DmaTree.Nil; done = _dmas.Next(done))
        {
            VfioDma dma = _dmas[done].Value;
            if (dma.IommuMapped)
            {
                foreach (PinnedRun run in dma.Runs)
                {
                    e = _iommu.Map(domain, run.Iova, run.Pfn << PageShift, run.Pages << PageShift, dma.Prot | de.Prot);
                    if (e != Errno.None)
                    {
                        break;
                    }
                }
            }
            else
            {
                newlyPinned.Add(dma);
                e = PinAndMap(dma, dma.Task, dma.Task.RlimitMemlock >> PageShift, [de]);
            }

            if (e != Errno.None)
            {
                break;
            }
        }

        if (e != Errno.None)
        {
            using (ErrorDetail.PreserveWhileUnwinding())
            {
                // Every mapping up to and including the one that failed (the walk stopped on it).
                for (int node = _dmas.First(); node != DmaTree.Nil; node = node == done ? DmaTree.Nil : _dmas.Next(node))
                {
                    VfioDma dma = _dmas[node].Value;
                    _iommu.Unmap(domain, dma.Iova, dma.Size);
                    if (newlyPinned.Contains(dma))
                    {
                        UnpinRuns(dma);
                    }
                }
            }

            return e;
        }

        foreach (VfioDma dma in _dmas)
        {
            dma.IommuMapped = true;
        }

        return Errno.None;
    }

    // vfio_sanity_check_pfn_list + unmap_unpin_reaccount: last IOMMU domain leaves, external remains.
    private void UnmapUnpinReaccount()
    {
        IDomain domain = _domains[0].Domain!;
        foreach (VfioDma dma in _dmas)
        {
            if (!dma.IommuMapped)
            {
                continue;
            }

            _iommu.Unmap(domain, dma.Iova, dma.Size);
            UnpinRuns(dma);
            dma.IommuMapped = false;
            foreach (VfioPfn p in dma.PfnList.Values)
            {
                if (!p.Reserved && !p.Accounted)
                {
                    p.Accounted = true;
                    Charge(dma, 1);
                }
            }
        }
    }
}
