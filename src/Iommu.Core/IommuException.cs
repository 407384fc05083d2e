namespace Iommu;

/// <summary>
/// An <see cref="Errno"/> turned into an exception by <see cref="ErrnoExtensions.ThrowIfError(Errno, string?)"/>.
/// </summary>
/// <remarks>
/// Kernel failure paths never throw by themselves: they return an errno, as the kernel does, and
/// the hot paths stay allocation-free. Callers who prefer exceptions opt in with <c>ThrowIfError</c>.
/// </remarks>
public sealed class IommuException : Exception
{
    /// <summary>Creates an exception for <paramref name="errno"/>.</summary>
    /// <param name="errno">The kernel error.</param>
    /// <param name="operation">The call that failed, if known.</param>
    /// <param name="detail">Which device, range or limit was at fault, if known.</param>
    public IommuException(Errno errno, string? operation, string? detail)
        : base(Format(errno, operation, detail))
    {
        Errno = errno;
        Operation = operation;
        Detail = detail;
    }

    /// <summary>Creates an exception with a plain message (<see cref="Errno.EINVAL"/>).</summary>
    public IommuException()
        : this(Errno.EINVAL, null, null)
    {
    }

    /// <summary>Creates an exception with a plain message (<see cref="Errno.EINVAL"/>).</summary>
    /// <param name="message">The message.</param>
    public IommuException(string message)
        : this(Errno.EINVAL, null, message)
    {
    }

    /// <summary>Creates an exception with a plain message and an inner exception (<see cref="Errno.EINVAL"/>).</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The cause.</param>
    public IommuException(string message, Exception innerException)
        : base(message, innerException)
    {
        Errno = Errno.EINVAL;
        Detail = message;
    }

    /// <summary>The kernel error number.</summary>
    public Errno Errno { get; }

    /// <summary>The call that failed, as written by the caller (or null).</summary>
    public string? Operation { get; }

    /// <summary>Which device, range or limit was at fault (or null when the failing code did not say).</summary>
    public string? Detail { get; }

    private static string Format(Errno errno, string? operation, string? detail)
    {
        string head = operation is null
            ? $"-{errno} ({errno.Describe()})"
            : $"{operation} failed with -{errno} ({errno.Describe()})";
        return detail is null ? head : $"{head}: {detail}";
    }
}
