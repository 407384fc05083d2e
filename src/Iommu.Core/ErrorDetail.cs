namespace Iommu;

/// <summary>
/// The human-readable detail of the last failure on this thread: which device, range or limit was
/// at fault. Like C's <c>errno</c> it is per thread; unlike it, it never decides behaviour.
/// </summary>
/// <remarks>
/// Failure paths return an <see cref="Errno"/> (cheap, allocation-free on success). To still give
/// people a precise message, the code that fails records a detail here and
/// <see cref="ErrnoExtensions.ThrowIfError(Errno, string?)"/> picks it up. The detail is keyed by
/// the errno it explains, so an unrelated older detail is never attached to a different error.
/// It holds no platform state: independent platforms on one thread only ever see the detail of
/// the call that just failed.
/// </remarks>
public static class ErrorDetail
{
    [ThreadStatic]
    private static Errno t_errno;

    [ThreadStatic]
    private static string? t_message;

    /// <summary>The errno of the last recorded failure on this thread (or <see cref="Errno.None"/>).</summary>
    public static Errno LastErrno => t_errno;

    /// <summary>The detail of the last recorded failure on this thread (or null).</summary>
    public static string? LastMessage => t_message;

    /// <summary>Records <paramref name="message"/> as the reason for <paramref name="errno"/> and returns the errno.</summary>
    /// <param name="errno">The error being returned.</param>
    /// <param name="message">Which device, range or limit was at fault.</param>
    /// <returns><paramref name="errno"/>, so that failure sites read <c>return ErrorDetail.Fail(...)</c>.</returns>
    public static Errno Fail(Errno errno, string message)
    {
        t_errno = errno;
        t_message = message;
        return errno;
    }

    /// <summary>Takes (and clears) the recorded detail if it explains <paramref name="errno"/>.</summary>
    /// <param name="errno">The error about to be reported.</param>
    /// <returns>The detail or null.</returns>
    public static string? Take(Errno errno)
    {
        string? message = t_errno == errno ? t_message : null;
        t_errno = Errno.None;
        t_message = null;
        return message;
    }

    /// <summary>Forgets the recorded detail.</summary>
    public static void Clear()
    {
        t_errno = Errno.None;
        t_message = null;
    }
}
