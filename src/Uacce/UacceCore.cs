using Iommu;
using Iommu.Devices;
using Iommu.Memory;
using Iommu.Mm;

namespace Uacce;

/// <summary>
/// The uacce framework of one <see cref="Iommu.Platform"/> (<c>drivers/misc/uacce</c>, 5.15): the
/// <c>uacce</c> class, the device-id allocator (<c>uacce_xa</c>) and the character devices
/// <c>/dev/&lt;name&gt;-&lt;id&gt;</c> user processes open to get a hardware queue working in their own
/// address space (SVA).
/// </summary>
/// <remarks>
/// <para>Nothing is global: a kernel has one <c>uacce_xa</c>; here each core has its own, so several
/// platforms coexist in a process. Failures the kernel reports as errno are returned (with a detail in
/// <see cref="ErrorDetail"/>) and leave state unchanged; misuse (null arguments, a disposed platform) throws.</para>
/// <para>Thread safety: the device list is locked; each device has its mutex (<c>uacce-&gt;mutex</c>), taken by
/// open, ioctl, mmap, release and remove (the model also uses it where 5.15 takes the queue's <c>q-&gt;mutex</c>).</para>
/// <para>Model decisions: open by name looks the device up among registered ones (the minor → device lookup, -ENODEV);
/// <see cref="Open(UacceDevice, ProcessAddressSpace, out int)"/> stands for a holder of the inode and so reaches
/// 5.15's -EINVAL for a removed device. Poll on a zombie returns 0 (5.15 would call the NULL ops after remove; the spec
/// asks for 0). The 6.x <c>isolate</c>/<c>isolate_strategy</c> attributes and <c>mremap</c> are not modelled.
/// The process model has no <c>vm_file</c>: a mapping does not keep the queue file open, so the release (last close)
/// revokes the queue's remaining mappings, as remove does, before the driver gets the hardware queue back. Whether <c>uacce_register</c> of a registered
/// device fails with -EEXIST (the kernel's second <c>cdev_device_add</c>) is a model choice.</para>
/// </remarks>
public sealed class UacceCore
{
    internal const ulong PageSize = PhysicalMemory.PageSize;

    private readonly Lock _lock = new();
    private readonly SortedDictionary<uint, UacceDevice> _ids = [];

    /// <summary>Creates the framework of <paramref name="platform"/> (<c>uacce_init</c>: the class and the id space).</summary>
    /// <param name="platform">The platform.</param>
    /// <exception cref="ObjectDisposedException">The platform is disposed.</exception>
    [KernelSymbol("uacce_init")]
    public UacceCore(Platform platform)
    {
        ArgumentNullException.ThrowIfNull(platform);
        platform.Memory.ThrowIfDisposed();
        Platform = platform;
    }

    /// <summary>The platform.</summary>
    public Platform Platform { get; }

    /// <summary>The registered devices (<c>/sys/class/uacce</c>), in id order.</summary>
    public IReadOnlyList<UacceDevice> Devices
    {
        get
        {
            lock (_lock)
            {
                var list = new List<UacceDevice>();
                foreach (UacceDevice d in _ids.Values)
                {
                    if (d.Registered)
                    {
                        list.Add(d);
                    }
                }

                return list;
            }
        }
    }

    /// <summary>
    /// Allocates a uacce device for <paramref name="parent"/> (<c>uacce_alloc</c>): negotiates SVA, takes the
    /// lowest free device id and names the device <c>&lt;name&gt;-&lt;id&gt;</c>, each '/' of the name replaced by '!'
    /// as the kernel does for every device name (<c>kobject_set_name_vargs</c>: a name is one <c>/dev</c> and sysfs component).
    /// </summary>
    /// <param name="parent">The physical device whose driver exposes queues.</param>
    /// <param name="interface">Name, requested flags and callbacks.</param>
    /// <param name="uacce">The device, or null on failure.</param>
    /// <returns>0, or -EBUSY when every 32-bit id is taken (nothing changed then, SVA disabled again).</returns>
    /// <remarks>
    /// SVA negotiation (5.15 <c>uacce_enable_sva</c>): when <see cref="UacceDeviceFlags.Sva"/> is requested,
    /// <see cref="IommuDevFeature.Iopf"/> then <see cref="IommuDevFeature.Sva"/> are enabled on the parent; if
    /// either fails (IOPF is disabled again after an SVA failure) the device is allocated <em>without</em> SVA
    /// and its queues get PASID 0. Callers must read <see cref="UacceDevice.Flags"/> back.
    /// </remarks>
    /// <exception cref="ArgumentException">The name is empty or <see cref="UacceCommands.MaxNameSize"/> characters or longer.</exception>
    /// <exception cref="ObjectDisposedException">The platform is disposed.</exception>
    [KernelSymbol("uacce_alloc")]
    public Errno Alloc(Device parent, UacceInterface @interface, out UacceDevice? uacce)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(parent);
        ArgumentNullException.ThrowIfNull(@interface);
        ArgumentNullException.ThrowIfNull(@interface.Name, nameof(@interface));
        ArgumentNullException.ThrowIfNull(@interface.Ops, nameof(@interface));
        if (@interface.Name.Length is 0 or >= UacceCommands.MaxNameSize)
        {
            throw new ArgumentException($"uacce name '{@interface.Name}' must have 1 to {UacceCommands.MaxNameSize - 1} characters", nameof(@interface));
        }

        uacce = null;
        UacceDeviceFlags flags = EnableSva(parent, @interface.Flags);
        lock (_lock)
        {
            uint id = 0;
            foreach (uint used in _ids.Keys)
            {
                if (used != id)
                {
                    break;
                }

                if (id == uint.MaxValue)
                {
                    DisableSva(parent, flags);
                    return ErrorDetail.Fail(Errno.EBUSY, "every uacce device id is taken");
                }

                id++;
            }

            uacce = new UacceDevice(this, parent, @interface, flags, id);
            _ids.Add(id, uacce);
        }

        return Errno.None;
    }

    /// <summary>Creates the character device <c>/dev/&lt;name&gt;-&lt;id&gt;</c> (<c>uacce_register</c>).</summary>
    /// <param name="uacce">A device from <see cref="Alloc"/>; null gives -ENODEV as in the kernel.</param>
    /// <returns>0; -ENODEV for null or a removed device; -EEXIST when it is registered already.</returns>
    /// <exception cref="ArgumentException"><paramref name="uacce"/> belongs to another core.</exception>
    [KernelSymbol("uacce_register")]
    public Errno Register(UacceDevice? uacce)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        if (uacce is null)
        {
            return ErrorDetail.Fail(Errno.ENODEV, "uacce_register(NULL)");
        }

        CheckOwner(uacce);
        lock (uacce.Mutex)
        {
            if (uacce.Removed)
            {
                return ErrorDetail.Fail(Errno.ENODEV, $"{uacce.Name} was removed");
            }

            if (uacce.Registered)
            {
                return ErrorDetail.Fail(Errno.EEXIST, $"/dev/{uacce.Name} exists");
            }

            uacce.Registered = true;
            return Errno.None;
        }
    }

    /// <summary>
    /// Removes the device as its parent driver unbinds (<c>uacce_remove</c>): zaps the user mappings of every
    /// queue, puts every queue (stop, then release its hardware; it becomes a zombie), drops every SVA bind,
    /// disables SVA then IOPF on the parent, deletes the character device and frees the id.
    /// </summary>
    /// <param name="uacce">The device; null is ignored as in the kernel.</param>
    /// <remarks>Open files survive as zombie queues: their ioctls and mmaps fail with -ENXIO, poll reports nothing; closing them is still needed. Idempotent.
    /// Model decision: a zapped mapping is unmapped from its process (the model has no SIGBUS; later access gives -EFAULT).</remarks>
    /// <exception cref="ArgumentException"><paramref name="uacce"/> belongs to another core.</exception>
    [KernelSymbol("uacce_remove")]
    public void Remove(UacceDevice? uacce)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        if (uacce is null)
        {
            return;
        }

        CheckOwner(uacce);
        lock (uacce.Mutex)
        {
            if (uacce.Removed)
            {
                return;
            }

            foreach (UacceQueue q in uacce.QueueList)
            {
                q.ZapMappings();
            }

            foreach (UacceQueue q in uacce.QueueList)
            {
                q.PutQueue();
                q.Unbind();
            }

            DisableSva(uacce.Parent!, uacce.Flags);
            lock (_lock)
            {
                _ids.Remove(uacce.DevId);
            }

            uacce.Detach();
        }
    }

    /// <summary>Opens <c>/dev/<paramref name="name"/></c> in <paramref name="mm"/> (<c>open(2)</c> → <c>uacce_fops_open</c>).</summary>
    /// <param name="name">The device name, <c>&lt;name&gt;-&lt;id&gt;</c>.</param>
    /// <param name="mm">The opening process.</param>
    /// <param name="fd">The new descriptor in <paramref name="mm"/>, or -1.</param>
    /// <returns>0; -ENODEV when no registered device has that name; else as <see cref="Open(UacceDevice, ProcessAddressSpace, out int)"/>.</returns>
    /// <exception cref="InvalidOperationException"><paramref name="mm"/> has exited.</exception>
    public Errno Open(string name, ProcessAddressSpace mm, out int fd)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(mm);
        fd = -1;
        UacceDevice? found = null;
        lock (_lock)
        {
            foreach (UacceDevice d in _ids.Values)
            {
                if (d.Registered && d.Name == name)
                {
                    found = d;
                }
            }
        }

        return found is null ? ErrorDetail.Fail(Errno.ENODEV, $"no uacce device /dev/{name}") : Open(found, mm, out fd);
    }

    /// <summary>
    /// Opens a queue of <paramref name="uacce"/> for <paramref name="mm"/> (<c>uacce_fops_open</c>): binds the
    /// process to the parent (SVA devices), hands the PASID to the driver's <see cref="IUacceOps.GetQueue"/> and
    /// installs the queue file in the process's fd table in state INIT.
    /// </summary>
    /// <param name="uacce">The device (an inode the caller holds).</param>
    /// <param name="mm">The opening process (<c>current-&gt;mm</c>).</param>
    /// <param name="fd">The new descriptor, or -1.</param>
    /// <returns>
    /// 0; -ENODEV when the device was never registered (no character device); -EINVAL when it was removed
    /// (<c>parent == NULL</c>); for SVA devices the errno of <see cref="IommuCore.SvaBindDevice"/> (e.g. -EINVAL for a
    /// multi-device group, -ENOMEM when PASIDs run out) or -ENODEV when the bind has no PASID; else the
    /// driver's <see cref="IUacceOps.GetQueue"/> errno (the bind is dropped again). Failures leave no queue, bind or fd.
    /// </returns>
    /// <exception cref="InvalidOperationException"><paramref name="mm"/> has exited.</exception>
    /// <exception cref="ArgumentException"><paramref name="uacce"/> belongs to another core.</exception>
    [KernelSymbol("uacce_fops_open")]
    public Errno Open(UacceDevice uacce, ProcessAddressSpace mm, out int fd)
    {
        using PhysicalMemory.AccessScope guard = Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(uacce);
        ArgumentNullException.ThrowIfNull(mm);
        CheckOwner(uacce);
        if (mm.Exited)
        {
            throw new InvalidOperationException($"{mm.Name} has exited");
        }

        fd = -1;
        lock (uacce.Mutex)
        {
            if (!uacce.Registered && !uacce.Removed)
            {
                return ErrorDetail.Fail(Errno.ENODEV, $"{uacce.Name} has no character device (uacce_register was not called)");
            }

            if (uacce.Parent is not Device parent)
            {
                return ErrorDetail.Fail(Errno.EINVAL, $"{uacce.Name} was removed");
            }

            var q = new UacceQueue(uacce, mm);
            if ((uacce.Flags & UacceDeviceFlags.Sva) != 0)
            {
                Errno e = Platform.Iommu.SvaBindDevice(parent, mm, null, out IommuSva? handle);
                if (e != Errno.None)
                {
                    return e;
                }

                uint pasid = Platform.Iommu.SvaGetPasid(handle!);
                if (pasid == IommuCore.PasidInvalid)
                {
                    Platform.Iommu.SvaUnbindDevice(handle!);
                    return ErrorDetail.Fail(Errno.ENODEV, $"the bind of {mm.Name} to {parent.Name} has no PASID");
                }

                q.Bind(handle!, pasid);
            }

            Errno r = uacce.Ops!.GetQueue(uacce, q.Pasid, q);
            if (r != Errno.None)
            {
                q.Unbind();
                return ErrorDetail.Fail(r, $"{uacce.Name}: the driver gave no queue to {mm.Name}");
            }

            q.State = UacceQueueState.Init;
            uacce.QueueList.Add(q);
            try
            {
                fd = mm.InstallFile(q);
            }
            catch
            {
                // The process exited meanwhile: no descriptor will ever release the queue, so its
                // release (uacce_fops_release) runs now.
                ((IFileReference)q).PutFile();
                throw;
            }

            return Errno.None;
        }
    }

    // uacce_enable_sva (5.15): IOPF first, then SVA; either failing leaves the device without SVA.
    private UacceDeviceFlags EnableSva(Device parent, UacceDeviceFlags flags)
    {
        if ((flags & UacceDeviceFlags.Sva) == 0)
        {
            return flags;
        }

        flags &= ~UacceDeviceFlags.Sva;
        if (Platform.Iommu.DevEnableFeature(parent, IommuDevFeature.Iopf) != Errno.None)
        {
            return flags;
        }

        if (Platform.Iommu.DevEnableFeature(parent, IommuDevFeature.Sva) != Errno.None)
        {
            _ = Platform.Iommu.DevDisableFeature(parent, IommuDevFeature.Iopf);
            return flags;
        }

        return flags | UacceDeviceFlags.Sva;
    }

    // uacce_disable_sva (5.15): SVA, then IOPF (errors ignored, as the kernel's dev_err only logs).
    private void DisableSva(Device parent, UacceDeviceFlags flags)
    {
        if ((flags & UacceDeviceFlags.Sva) == 0)
        {
            return;
        }

        _ = Platform.Iommu.DevDisableFeature(parent, IommuDevFeature.Sva);
        _ = Platform.Iommu.DevDisableFeature(parent, IommuDevFeature.Iopf);
    }

    private void CheckOwner(UacceDevice uacce)
    {
        if (uacce.Core != this)
        {
            throw new ArgumentException($"{uacce.Name} belongs to another uacce core", nameof(uacce));
        }
    }
}
