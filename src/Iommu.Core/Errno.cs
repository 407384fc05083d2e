namespace Iommu;

/// <summary>
/// Linux error numbers, with the values of x86-64 Linux. Kernel functions that return <c>int</c>
/// return an <see cref="Errno"/> here; <see cref="None"/> (0) is success.
/// </summary>
/// <remarks>
/// The kernel returns <c>-errno</c>; the model returns the positive enum value and keeps the sign
/// convention out of the API. Member names are the C macro names so that they read like the spec.
/// </remarks>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1707", Justification = "C macro names.")]
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1028", Justification = "Values are Linux errno numbers.")]
public enum Errno
{
    /// <summary>Success.</summary>
    None = 0,
    /// <summary>Operation not permitted.</summary>
    EPERM = 1,
    /// <summary>No such file or directory.</summary>
    ENOENT = 2,
    /// <summary>No such process.</summary>
    ESRCH = 3,
    /// <summary>Interrupted system call.</summary>
    EINTR = 4,
    /// <summary>I/O error.</summary>
    EIO = 5,
    /// <summary>No such device or address.</summary>
    ENXIO = 6,
    /// <summary>Argument list too long.</summary>
    E2BIG = 7,
    /// <summary>Bad file number.</summary>
    EBADF = 9,
    /// <summary>Try again.</summary>
    EAGAIN = 11,
    /// <summary>Out of memory.</summary>
    ENOMEM = 12,
    /// <summary>Permission denied.</summary>
    EACCES = 13,
    /// <summary>Bad address.</summary>
    EFAULT = 14,
    /// <summary>Device or resource busy.</summary>
    EBUSY = 16,
    /// <summary>File exists.</summary>
    EEXIST = 17,
    /// <summary>No such device.</summary>
    ENODEV = 19,
    /// <summary>Invalid argument.</summary>
    EINVAL = 22,
    /// <summary>Not a typewriter (inappropriate ioctl for device).</summary>
    ENOTTY = 25,
    /// <summary>No space left on device.</summary>
    ENOSPC = 28,
    /// <summary>Math result not representable.</summary>
    ERANGE = 34,
    /// <summary>Resource deadlock would occur.</summary>
    EDEADLK = 35,
    /// <summary>Invalid system call number (function not implemented).</summary>
    ENOSYS = 38,
    /// <summary>Value too large for defined data type.</summary>
    EOVERFLOW = 75,
    /// <summary>Message too long.</summary>
    EMSGSIZE = 90,
    /// <summary>Operation not supported.</summary>
    EOPNOTSUPP = 95,
    /// <summary>Address already in use.</summary>
    EADDRINUSE = 98,
}
