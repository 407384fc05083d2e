using System.Diagnostics.CodeAnalysis;

namespace Iommu;

/// <summary>Helpers over <see cref="Errno"/>: text, exceptions and the kernel's sign convention.</summary>
public static class ErrnoExtensions
{
    /// <summary>
    /// Throws an <see cref="IommuException"/> when <paramref name="errno"/> is not
    /// <see cref="Errno.None"/>. The message carries the detail recorded by the call that failed
    /// on this thread (which device, range or limit), when there is one.
    /// </summary>
    /// <param name="errno">The result of a kernel-style call.</param>
    /// <param name="operation">Text of the call, filled in by the compiler.</param>
    public static void ThrowIfError(this Errno errno, [System.Runtime.CompilerServices.CallerArgumentExpression(nameof(errno))] string? operation = null)
    {
        if (errno != Errno.None)
        {
            Throw(errno, operation);
        }
    }

    /// <summary>
    /// Throws when a kernel-style <c>int</c> result (a value ≥ 0 or a negative errno, such as the
    /// PASID from <c>iommu_aux_get_pasid</c>) is negative; otherwise returns it.
    /// </summary>
    /// <param name="result">Value or negative errno.</param>
    /// <param name="operation">Text of the call, filled in by the compiler.</param>
    /// <returns><paramref name="result"/> when it is not an error.</returns>
    public static int ThrowIfError(this int result, [System.Runtime.CompilerServices.CallerArgumentExpression(nameof(result))] string? operation = null)
    {
        if (result < 0)
        {
            Throw((Errno)(-result), operation);
        }

        return result;
    }

    /// <summary>The kernel's return convention: <c>-errno</c> (0 for success).</summary>
    /// <param name="errno">The error.</param>
    /// <returns>The negative errno value.</returns>
    public static int ToKernelReturn(this Errno errno) => -(int)errno;

    /// <summary>Decodes a kernel return value (0 or a negative errno).</summary>
    /// <param name="kernelReturn">0 or a negative errno.</param>
    /// <returns>The errno, or <see cref="Errno.None"/> for values ≥ 0.</returns>
    public static Errno FromKernelReturn(int kernelReturn) => kernelReturn < 0 ? (Errno)(-kernelReturn) : Errno.None;

    /// <summary>The C library's text for the error (<c>strerror</c>).</summary>
    /// <param name="errno">The error.</param>
    /// <returns>A short description.</returns>
    public static string Describe(this Errno errno) => errno switch
    {
        Errno.None => "Success",
        Errno.EPERM => "Operation not permitted",
        Errno.ENOENT => "No such file or directory",
        Errno.ESRCH => "No such process",
        Errno.EINTR => "Interrupted system call",
        Errno.EIO => "Input/output error",
        Errno.ENXIO => "No such device or address",
        Errno.E2BIG => "Argument list too long",
        Errno.EBADF => "Bad file descriptor",
        Errno.EAGAIN => "Resource temporarily unavailable",
        Errno.ENOMEM => "Cannot allocate memory",
        Errno.EACCES => "Permission denied",
        Errno.EFAULT => "Bad address",
        Errno.EBUSY => "Device or resource busy",
        Errno.EEXIST => "File exists",
        Errno.ENODEV => "No such device",
        Errno.EINVAL => "Invalid argument",
        Errno.ENOTTY => "Inappropriate ioctl for device",
        Errno.ENOSPC => "No space left on device",
        Errno.ERANGE => "Numerical result out of range",
        Errno.EDEADLK => "Resource deadlock avoided",
        Errno.ENOSYS => "Function not implemented",
        Errno.EOVERFLOW => "Value too large for defined data type",
        Errno.EMSGSIZE => "Message too long",
        Errno.EOPNOTSUPP => "Operation not supported",
        Errno.EADDRINUSE => "Address already in use",
        _ => $"Unknown error {(int)errno}",
    };

    [DoesNotReturn]
    private static void Throw(Errno errno, string? operation)
    {
        string? detail = ErrorDetail.Take(errno);
        throw new IommuException(errno, operation, detail);
    }
}
