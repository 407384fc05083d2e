using Iommu.Memory;
using System.Buffers.Binary;
using System.Text;
using Iommu;
using Iommu.Devices;
using Iommu.Groups;
using Iommu.Mm;
using Vfio.Mdev;
using Vfio.Type1.Memory;
using Vfio.Type1.Uapi;
using Vfio.Type1.Internal;

namespace Vfio.Type1;

/// <summary>
/// A VFIO group (<c>struct vfio_group</c>, <c>/dev/vfio/N</c>) over one IOMMU group: opened by at most one
/// descriptor, joined to at most one container, hands out device descriptors.
/// </summary>
/// <remarks>
/// State machine of <c>vfio.c</c>'s group (<c>vfio_group_fops_open</c>, <c>vfio_group_set_container</c>,
/// <c>vfio_group_try_dissolve_container</c>): a second open or an open while still in a container is
/// -EBUSY; the
/// container is left when the last "container user" (the group file and each device file) goes away.
/// Thread safety: all members may be called concurrently (one lock per group, then the container's).
/// </remarks>
public sealed class VfioGroup : VfioFile
{
    private readonly Lock _lock = new();

    // group->container_q: pulsed when the group leaves its container.
    private readonly object _containerQ = new();
    private bool _opened;

    // container_users, an atomic as in 5.15: the group file's 1 while in a container, plus one per device
    // file and per vendor call in flight. Taken with inc-not-zero and dropped with dec-if-positive without
    // the group lock (a vendor's callback reaches here from under an mdev's open gate, which an opener
    // holding the group lock may wait for); the transitions to and from 0 happen under the group lock.
    private int _containerUsers;
    private VfioContainer? _container;

    internal VfioGroup(VfioCore core, IommuGroup group)
    {
        Core = core;
        IommuGroup = group;
    }

    /// <summary>The VFIO core.</summary>
    public VfioCore Core { get; }

    /// <summary>The IOMMU group.</summary>
    public IommuGroup IommuGroup { get; }

    /// <summary>The process that opened the group file, if open.</summary>
    public ProcessAddressSpace? Owner { get; private set; }

    /// <summary>The descriptor in <see cref="Owner"/>'s table.</summary>
    public int Fd { get; internal set; } = -1;

    /// <summary>The container, if set.</summary>
    public VfioContainer? Container => Volatile.Read(ref _container);

    /// <summary>True when every device is an mdev (the group is on the mdev bus).</summary>
    public bool IsMdevGroup
    {
        get
        {
            IReadOnlyList<Device> devs = IommuGroup.Devices;
            return devs.Count > 0 && VfioCore.IsMdev(devs[0]);
        }
    }

    /// <summary>Closes <see cref="Fd"/> in the owner's table.</summary>
    /// <returns>0 or -EBADF.</returns>
    public Errno Close() => Owner is null ? ErrorDetail.Fail(Errno.EBADF, "group is not open") : Owner.Close(Fd);

    private protected override (ProcessAddressSpace? Owner, int Fd) OpenedAs => (Owner, Fd);

    /// <summary>The group ioctl as the owner issues it.</summary>
    /// <param name="request">Ioctl number.</param>
    /// <param name="arg">Argument: the structure (GET_STATUS), a 4-byte fd (SET_CONTAINER), the NUL-terminated device name (GET_DEVICE_FD).</param>
    /// <returns>The syscall result (GET_DEVICE_FD: the new fd).</returns>
    public int Ioctl(uint request, Span<byte> arg)
    {
        ProcessAddressSpace? owner = Owner;
        if (owner is null)
        {
            ThrowHelper.GroupNotOpen();
        }

        return Ioctl(owner, request, arg);
    }

    /// <summary>The group ioctl (<c>vfio_group_fops_unl_ioctl</c>) issued by <paramref name="caller"/>.</summary>
    /// <param name="caller">Calling process (fds are looked up and installed in its table).</param>
    /// <param name="request">Ioctl number.</param>
    /// <param name="arg">Argument bytes (see <see cref="Ioctl(uint, Span{byte})"/>).</param>
    /// <returns>The syscall result.</returns>
    [KernelSymbol("vfio_group_fops_unl_ioctl")]
    public int Ioctl(ProcessAddressSpace caller, uint request, Span<byte> arg)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(caller);
        switch (request)
        {
            case VfioUapi.VFIO_GROUP_GET_STATUS:
                {
                    // copy_from_user(&status, arg, minsz = 8) comes before the argsz check: a buffer shorter
                    // than 8 bytes is -EFAULT whatever its argsz says (fuzzing found -EINVAL for 4..7 bytes).
                    if (arg.Length < VfioGroupStatus.Size)
                    {
                        return -(int)ErrorDetail.Fail(Errno.EFAULT, "GET_STATUS: argument shorter than 8 bytes");
                    }

                    uint argsz = VfioGroupStatus.Read(arg).Argsz;
                    if (argsz < VfioGroupStatus.Size)
                    {
                        return -(int)ErrorDetail.Fail(Errno.EINVAL, $"GET_STATUS: argsz {argsz} < 8");
                    }

                    new VfioGroupStatus(argsz, GetStatus().Flags).Write(arg);
                    return 0;
                }

            case VfioUapi.VFIO_GROUP_SET_CONTAINER:
                {
                    if (arg.Length < 4)
                    {
                        return -(int)ErrorDetail.Fail(Errno.EFAULT, "SET_CONTAINER: argument too short");
                    }

                    return -(int)SetContainer(caller, BinaryPrimitives.ReadInt32LittleEndian(arg));
                }

            case VfioUapi.VFIO_GROUP_UNSET_CONTAINER:
                return -(int)UnsetContainer();
            case VfioUapi.VFIO_GROUP_GET_DEVICE_FD:
                {
                    int nul = arg.IndexOf((byte)0);
                    string name = Encoding.UTF8.GetString(nul < 0 ? arg : arg[..nul]);
                    Errno e = GetDeviceFd(caller, name, out _, out int fd);
                    return e == Errno.None ? fd : -(int)e;
                }

            default:
                return -(int)ErrorDetail.Fail(Errno.ENOTTY, $"group ioctl 0x{request:x} unknown");
        }
    }

    /// <summary><c>VFIO_GROUP_GET_STATUS</c>.</summary>
    /// <returns>argsz 8 and the flags VIABLE / CONTAINER_SET.</returns>
    public VfioGroupStatus GetStatus()
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        uint flags = 0;
        if (Core.IsViable(IommuGroup))
        {
            flags |= VfioUapi.VFIO_GROUP_FLAGS_VIABLE;
        }

        if (Container is not null)
        {
            flags |= VfioUapi.VFIO_GROUP_FLAGS_CONTAINER_SET;
        }

        return new VfioGroupStatus(VfioGroupStatus.Size, flags);
    }

    /// <summary><c>VFIO_GROUP_SET_CONTAINER</c> with a container object.</summary>
    /// <param name="container">The container.</param>
    /// <returns>0 or the errno of <c>vfio_group_set_container</c>.</returns>
    public Errno SetContainer(VfioContainer container)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(container);
        return SetContainer(container.Owner, container.Fd);
    }

    /// <summary><c>VFIO_GROUP_SET_CONTAINER</c> with a descriptor of <paramref name="caller"/> (5.15 order of checks).</summary>
    /// <param name="caller">The process whose fd table <paramref name="containerFd"/> indexes.</param>
    /// <param name="containerFd">The container descriptor.</param>
    /// <returns>0; -EINVAL (fd &lt; 0, already in a container, not a container); -EBADF (fd not open, or the group file is closed); attach errors.</returns>
    [KernelSymbol("vfio_group_set_container")]
    public Errno SetContainer(ProcessAddressSpace caller, int containerFd)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(caller);
        if (containerFd < 0)
        {
            // 5.15; 6.1.192 has no such check (fd -1 is -EBADF there).
            return ErrorDetail.Fail(Errno.EINVAL, $"SET_CONTAINER: fd {containerFd} < 0");
        }

        lock (_lock)
        {
            // The ioctl needs the group file: after its release nothing would ever unset the container.
            if (!_opened)
            {
                return ErrorDetail.Fail(Errno.EBADF, $"SET_CONTAINER: group {IommuGroup.Id} is not open");
            }

            // A container that is being left (its last user gone, the dissolve not yet done) still counts.
            if (Volatile.Read(ref _containerUsers) != 0 || _container is not null)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"SET_CONTAINER: group {IommuGroup.Id} is already in a container");
            }

            object? f = caller.GetFile(containerFd);
            if (f is null)
            {
                return ErrorDetail.Fail(Errno.EBADF, $"SET_CONTAINER: fd {containerFd} is not open");
            }

            if (f is not VfioContainer c)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"SET_CONTAINER: fd {containerFd} is not a VFIO container");
            }

            lock (c.Sync)
            {
                VfioIommuType1? b = c.Backend;
                if (b is not null)
                {
                    Errno e = b.AttachGroup(this);
                    if (e != Errno.None)
                    {
                        return e;
                    }
                }

                c.GroupList.Add(this);
                Volatile.Write(ref _container, c);
                Volatile.Write(ref _containerUsers, 1);
            }

            return Errno.None;
        }
    }

    /// <summary><c>VFIO_GROUP_UNSET_CONTAINER</c>.</summary>
    /// <returns>0; -EINVAL (not in a container); -EBUSY (device descriptors open).</returns>
    [KernelSymbol("vfio_group_unset_container")]
    public Errno UnsetContainer()
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        lock (_lock)
        {
            // atomic_cmpxchg(container_users, 1, 0): only the group file's own user may be left.
            int users = Interlocked.CompareExchange(ref _containerUsers, 0, 1);
            if (users == 0 || _container is null)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"UNSET_CONTAINER: group {IommuGroup.Id} is not in a container");
            }

            if (users > 1)
            {
                return ErrorDetail.Fail(Errno.EBUSY, $"UNSET_CONTAINER: group {IommuGroup.Id} has {users - 1} open device fd(s) or vendor calls in flight");
            }

            UnsetLocked();
            return Errno.None;
        }
    }

    /// <summary><c>VFIO_GROUP_GET_DEVICE_FD</c> (5.15 order: container/backend/viability first, then the name).</summary>
    /// <param name="caller">The process that receives the descriptor.</param>
    /// <param name="name">Device name (PCI address or mdev UUID).</param>
    /// <param name="file">The device file.</param>
    /// <param name="fd">The new descriptor.</param>
    /// <returns>0; -EINVAL (no container, no backend, not viable); -ENODEV (no such device); open errors.</returns>
    /// <exception cref="InvalidOperationException"><paramref name="caller"/> has exited (or is exiting); nothing is left open.</exception>
    [KernelSymbol("vfio_group_get_device_fd")]
    public Errno GetDeviceFd(ProcessAddressSpace caller, string name, out VfioDeviceFile? file, out int fd)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(caller);
        file = null;
        fd = -1;
        lock (_lock)
        {
            // vfio_group_add_container_user first: the device file keeps the user it takes here.
            if (AddContainerUser() is null)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"GET_DEVICE_FD: group {IommuGroup.Id} has no container with a backend, or is not viable");
            }

            Device? dev = null;
            foreach (Device d in IommuGroup.Devices)
            {
                if (d.Name == name && Core.IsBoundToVfio(d))
                {
                    dev = d;
                    break;
                }
            }

            if (dev is null)
            {
                DropContainerUser();
                return ErrorDetail.Fail(Errno.ENODEV, $"GET_DEVICE_FD: no VFIO device '{name}' in group {IommuGroup.Id}");
            }

            MdevDeviceFile? mfile = null;
            if (MdevDevice.FromDevice(dev) is { } mdev)
            {
                Errno e = mdev.Open(out mfile);
                if (e != Errno.None)
                {
                    DropContainerUser();
                    return e;
                }
            }

            file = new VfioDeviceFile(this, dev, caller, mfile);
            try
            {
                fd = caller.InstallFile(file);
            }
            catch
            {
                // The caller exited meanwhile: no descriptor will ever close the file, so its release
                // runs now (the mdev closes, the container user goes).
                file.PutFileRef();
                file = null;
                throw;
            }

            file.Fd = fd;
            return Errno.None;
        }
    }

    internal Errno Open(ProcessAddressSpace process)
    {
        lock (_lock)
        {
            if (_opened)
            {
                return ErrorDetail.Fail(Errno.EBUSY, $"/dev/vfio/{IommuGroup.Id} is already open");
            }

            if (_container is not null)
            {
                return ErrorDetail.Fail(Errno.EBUSY, $"/dev/vfio/{IommuGroup.Id} is still attached to a container");
            }

            _opened = true;
            Owner = process;
            OpenFileRef();
            return Errno.None;
        }
    }

    // vfio_group_add_container_user: keeps the group in its container (UNSET_CONTAINER is -EBUSY, a close
    // does not dissolve) until DropContainerUser; null when the group is in no container with a backend or
    // is not viable. No group lock (see _containerUsers): atomic_inc_not_zero, then the checks.
    internal VfioIommuType1? AddContainerUser()
    {
        int users = Volatile.Read(ref _containerUsers);
        while (true)
        {
            if (users == 0)
            {
                return null;
            }

            int seen = Interlocked.CompareExchange(ref _containerUsers, users + 1, users);
            if (seen == users)
            {
                break;
            }

            users = seen;
        }

        if (Volatile.Read(ref _container)?.Backend is VfioIommuType1 backend && Core.IsViable(IommuGroup))
        {
            return backend;
        }

        DropContainerUser();
        return null;
    }

    // vfio_group_try_dissolve_container: atomic_dec_if_positive without the group lock; the user that
    // brings the count to 0 leaves the container under it.
    internal void DropContainerUser()
    {
        int users = Volatile.Read(ref _containerUsers);
        while (users > 0)
        {
            int seen = Interlocked.CompareExchange(ref _containerUsers, users - 1, users);
            if (seen == users)
            {
                if (users == 1)
                {
                    lock (_lock)
                    {
                        UnsetLocked();
                    }
                }

                return;
            }

            users = seen;
        }
    }

    private void UnsetLocked()
    {
        VfioContainer c = _container!;
        lock (c.Sync)
        {
            c.RemoveGroupLocked(this);
        }

        Volatile.Write(ref _container, null);
        Volatile.Write(ref _containerUsers, 0);
        lock (_containerQ)
        {
            Monitor.PulseAll(_containerQ);
        }
    }

    /// <summary>Blocks until the group is in no container (<c>wait_event(group-&gt;container_q, !group-&gt;container)</c>).</summary>
    internal void WaitForNoContainer()
    {
        lock (_containerQ)
        {
            while (Volatile.Read(ref _container) is not null)
            {
                Monitor.Wait(_containerQ);
            }
        }
    }

    private protected override void Release()
    {
        DropContainerUser();
        lock (_lock)
        {
            _opened = false;
            Owner = null;
            Fd = -1;
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"vfio group {IommuGroup.Id}";
}
